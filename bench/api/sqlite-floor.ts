/**
 * Triggers per second of SQLite alone on this machine: the floor under Slipway's own cost.
 * Each trigger inserts the rows of one `POST /api/trigger/ci` (the job, its two tasks and the
 * audit row, with ids made as Slipway makes them) into Slipway's real schema, with statements
 * prepared once, 32 triggers per transaction and `synchronous=FULL`. There is no HTTP, Kysely, idempotency lookup or cancel
 * of an earlier job, so Slipway's trigger can only be slower than this.
 *
 * With --no-secondary-indexes the indexes that Slipway's queries need are dropped first, to
 * show what they cost.
 *
 * Usage: npx tsx bench/api/sqlite-floor.ts [--seconds 5] [--batch 32] [--no-secondary-indexes]
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { newJobId } from '../../src/jobs/ids.js';
import { DEFAULT_PIPELINES_PATH, loadPipelineFile } from '../../src/pipeline/load.js';
import { openStore } from '../../src/store/database.js';

const { values: options } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    batch: { type: 'string', default: '32' },
    'no-secondary-indexes': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(options.seconds);
const BATCH = Number(options.batch);

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-floor-'));
const dbPath = path.join(dataDir, 'floor.db');
await (await openStore(dbPath)).close();

const sqlite = new Database(dbPath);
sqlite.pragma('journal_mode = WAL');
sqlite.pragma('synchronous = FULL');
if (options['no-secondary-indexes']) {
  const indexes = sqlite
    .prepare(
      `SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
       AND tbl_name IN ('jobs', 'tasks', 'audit_log')`,
    )
    .all() as Array<{ name: string }>;
  for (const { name } of indexes) sqlite.exec(`DROP INDEX ${name}`);
}

// The job row keeps a snapshot of its pipeline, as a trigger of the built-in `ci` does.
const pipeline = JSON.stringify(loadPipelineFile(DEFAULT_PIPELINES_PATH).pipelines.ci);
const insertJob = sqlite.prepare(
  `INSERT INTO jobs (id, type, status, commit_sha, branch, params, github_run_id,
     github_run_attempt, request_hash, attempt, requested_by, concurrency_group, pipeline,
     created_at, queued_at, updated_at)
   VALUES (?, 'ci', 'queued', ?, 'main', ?, ?, 1, ?, 1, 'bench', 'ci-main', ?, ?, ?, ?)`,
);
const insertTask = sqlite.prepare(
  `INSERT INTO tasks (id, job_id, job_attempt, idx, name, matrix, status, executor, attempt,
     max_attempts, created_at, queued_at, updated_at)
   VALUES (?, ?, 1, ?, ?, ?, 'queued', 'docker', 0, 3, ?, ?, ?)`,
);
const insertAudit = sqlite.prepare(
  `INSERT INTO audit_log (action, actor, job_id, request_id, source, details, created_at)
   VALUES ('job_triggered', 'bench', ?, ?, '127.0.0.1', ?, ?)`,
);
const commit = '0123456789abcdef0123456789abcdef01234567';
const params = JSON.stringify({ python_versions: ['3.10', '3.11'], params: {} });

let triggers = 0;
const started = performance.now();
const cpuBefore = process.cpuUsage();
while (performance.now() - started < SECONDS * 1000) {
  sqlite.exec('BEGIN IMMEDIATE');
  for (let index = 0; index < BATCH; index += 1) {
    triggers += 1;
    const now = new Date().toISOString();
    let id = newJobId('ci');
    // As Slipway's trigger does, draw a new id when it collides with another job's.
    for (;;) {
      try {
        insertJob.run(
          id,
          commit,
          params,
          String(triggers),
          randomBytes(32).toString('hex'),
          pipeline,
          now,
          now,
          now,
        );
        break;
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') throw error;
        id = newJobId('ci');
      }
    }
    for (const [taskIndex, version] of ['3.10', '3.11'].entries()) {
      const matrix = JSON.stringify({ python_version: version });
      insertTask.run(
        `${id}-1-${taskIndex}`,
        id,
        taskIndex,
        `ci (${version})`,
        matrix,
        now,
        now,
        now,
      );
    }
    const details = JSON.stringify({
      type: 'ci',
      status: 'queued',
      commit,
      branch: 'main',
      tasks: 2,
    });
    insertAudit.run(id, `bench-${triggers}`, details, now);
  }
  sqlite.exec('COMMIT');
}
const elapsedSeconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuBefore);
sqlite.close();
fs.rmSync(dataDir, { recursive: true, force: true });

const indexes = options['no-secondary-indexes'] ? 'no secondary indexes' : "Slipway's indexes";
console.log(`${BATCH} triggers per transaction, ${indexes}, ${elapsedSeconds.toFixed(1)} s`);
console.log(`triggers/s            ${(triggers / elapsedSeconds).toFixed(0)}`);
console.log(
  `CPU per trigger       ${((cpu.user + cpu.system) / triggers).toFixed(0)} µs (user + system)`,
);
