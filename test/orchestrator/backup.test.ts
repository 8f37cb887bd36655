import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli, startApiProcess, type ApiProcess } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const ADMIN = 'slw_test-admin-token-backup-000000000000';

interface Answer {
  jobId: string;
  answeredAt: number;
}

/** Triggers ci jobs from `parallel` loops until `until()` is true; records every 201. */
async function burst(url: string, parallel: number, until: () => boolean): Promise<Answer[]> {
  const answers: Answer[] = [];
  let counter = 0;
  const loop = async () => {
    while (!until()) {
      const commit = (0x1000000 + counter++).toString(16).padStart(10, '0');
      const response = await fetch(`${url}/api/trigger/ci`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ commit, branch: `b${counter}` }),
      });
      const body = (await response.json()) as { job_id: string };
      if (response.status === 201) answers.push({ jobId: body.job_id, answeredAt: Date.now() });
    }
  };
  await Promise.all(Array.from({ length: parallel }, loop));
  return answers;
}

function jobIds(file: string): Set<string> {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return new Set(db.prepare('SELECT id FROM jobs').pluck().all() as string[]);
  } finally {
    db.close();
  }
}

function integrity(file: string): string {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return db.pragma('integrity_check', { simple: true }) as string;
  } finally {
    db.close();
  }
}

describe('backup and restore', () => {
  const dir = makeTempDir();
  const env = { SLIPWAY_DATA_DIR: dir, SLIPWAY_ADMIN_TOKEN: ADMIN, LOG_LEVEL: 'warn' };
  const backupFile = path.join(dir, 'copy', 'during-burst.db');
  let api: ApiProcess | undefined;
  let answers: Answer[] = [];
  let backupStartedAt = 0;

  beforeAll(async () => {
    await ensureBuilt();
    api = await startApiProcess({ ...env, LOG_LEVEL: 'info' }, 'api', 60_000);
  });
  afterAll(async () => {
    await api?.stop();
  });

  it('copies every job answered 201 before the backup started', async () => {
    let backupDone = false;
    const triggers = burst(api!.url, 8, () => backupDone);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    backupStartedAt = Date.now();
    const backup = await runCli(['backup', '--output', backupFile], env, 60_000);
    backupDone = true;
    answers = await triggers;
    expect(backup.code, backup.stderr).toBe(0);
    expect(JSON.parse(backup.stdout.trim()).path).toBe(backupFile);

    const before = answers.filter((answer) => answer.answeredAt < backupStartedAt);
    expect(before.length).toBeGreaterThan(20);
    expect(answers.length).toBeGreaterThan(before.length);
    const copied = jobIds(backupFile);
    const missing = before.filter((answer) => !copied.has(answer.jobId));
    expect(missing).toEqual([]);
    expect(integrity(backupFile)).toBe('ok');
    expect(fs.existsSync(`${backupFile}-wal`)).toBe(false);
  });

  it('rejects a restore while the API runs', async () => {
    const rejected = await runCli(['restore', backupFile], env, 30_000);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr).toContain('restore rejected');
    expect(rejected.stderr).toMatch(/in use by api \(pid \d+/);
    expect(rejected.stderr).toContain('orchestration.db.processes/');
    const live = path.join(dir, 'state', 'orchestration.db');
    expect(jobIds(live).size).toBeGreaterThanOrEqual(answers.length);
  });

  it('restores the backup once the API stopped', async () => {
    await api!.stop();
    api = undefined;
    const restored = await runCli(['restore', backupFile], env, 30_000);
    expect(restored.code, restored.stderr).toBe(0);
    const result = JSON.parse(restored.stdout.trim());
    expect(fs.existsSync(result.previous)).toBe(true);

    const live = path.join(dir, 'state', 'orchestration.db');
    expect(integrity(live)).toBe('ok');
    const ids = jobIds(live);
    for (const answer of answers.filter((entry) => entry.answeredAt < backupStartedAt)) {
      expect(ids.has(answer.jobId), answer.jobId).toBe(true);
    }
    const db = new BetterSqlite3(live, { readonly: true });
    const audit = db
      .prepare("SELECT details FROM audit_log WHERE action = 'database_restored'")
      .pluck()
      .all() as string[];
    db.close();
    expect(audit).toHaveLength(1);
    expect(JSON.parse(audit[0]!).source).toBe(backupFile);
  });

  it('rejects a file that is not a database', async () => {
    const bogus = path.join(dir, 'not-a-database.db');
    fs.writeFileSync(bogus, 'hello, this is not SQLite');
    const result = await runCli(['restore', bogus], env, 30_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('is not a readable SQLite database');
    const live = path.join(dir, 'state', 'orchestration.db');
    expect(integrity(live)).toBe('ok');
  });

  it('rejects an empty file or a foreign database', async () => {
    const live = path.join(dir, 'state', 'orchestration.db');
    const jobsBefore = jobIds(live).size;
    expect(jobsBefore).toBeGreaterThan(0);
    // SQLite opens an empty file as an empty database whose integrity check passes.
    const empty = path.join(dir, 'empty.db');
    fs.writeFileSync(empty, '');
    const foreign = path.join(dir, 'foreign.db');
    const other = new BetterSqlite3(foreign);
    other.exec('CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES (1);');
    other.close();

    for (const file of [empty, foreign]) {
      const result = await runCli(['restore', file], env, 30_000);
      expect(result.code, file).toBe(1);
      expect(result.stderr).toContain(`backup ${file} is not a Slipway database`);
      expect(jobIds(live).size).toBe(jobsBefore);
    }
  });
});
