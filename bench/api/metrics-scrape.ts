/**
 * Time of a Prometheus scrape and of `GET /api/state` against a database of many finished
 * jobs. The script inserts `--jobs` finished jobs, spread over the six finished statuses, and
 * `--active` jobs in each of waiting, queued and running into a scratch database with plain
 * SQL. It then starts `slipway api` in this process on 127.0.0.1 and times `--requests`
 * requests of each route, one at a time, and the job count alone (countJobsByStatus).
 *
 * Usage: npx tsx bench/api/metrics-scrape.ts [--jobs 200000] [--active 100] [--requests 50]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { createContext } from '../../src/app/context.js';
import { startApi } from '../../src/app/roles.js';
import { loadConfig } from '../../src/config/env.js';
import { ACTIVE_STATUSES, TERMINAL_STATUSES } from '../../src/jobs/status.js';
import { createLogger } from '../../src/log.js';
import { openStore } from '../../src/store/database.js';
import { countJobsByStatus } from '../../src/store/jobs.js';

const { values: options } = parseArgs({
  options: {
    jobs: { type: 'string', default: '200000' },
    active: { type: 'string', default: '100' },
    requests: { type: 'string', default: '50' },
  },
});
const FINISHED_JOBS = Number(options.jobs);
const ACTIVE_JOBS = Number(options.active);
const REQUESTS = Number(options.requests);
const ADMIN_TOKEN = 'slw_bench-metrics-admin-token-000000000';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-scrape-'));
const config = loadConfig({
  SLIPWAY_DATA_DIR: dataDir,
  API_HOST: '127.0.0.1',
  API_PORT: '0',
  API_RATE_LIMIT: '0',
  LOG_LEVEL: 'warn',
  SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
});
const dbPath = config.dbPath;
await (await openStore(dbPath)).close();

function seed(): void {
  const sqlite = new Database(dbPath);
  const insert = sqlite.prepare(
    `INSERT INTO jobs (id, type, status, commit_sha, branch, created_at, finished_at, updated_at)
     VALUES (?, 'ci', ?, '0123456789abcdef0123456789abcdef01234567', 'main', ?, ?, ?)`,
  );
  const finished = [...TERMINAL_STATUSES];
  const start = Date.parse('2026-01-01T00:00:00.000Z');
  sqlite.transaction(() => {
    for (let index = 0; index < FINISHED_JOBS; index += 1) {
      const at = new Date(start + index * 1000).toISOString();
      insert.run(`ci-f${index}`, finished[index % finished.length], at, at, at);
    }
    for (const status of ACTIVE_STATUSES) {
      for (let index = 0; index < ACTIVE_JOBS; index += 1) {
        const at = new Date().toISOString();
        insert.run(`ci-${status}${index}`, status, at, null, at);
      }
    }
  })();
  sqlite.close();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function timeRequests(url: string): Promise<number> {
  const durations: number[] = [];
  for (let index = 0; index < REQUESTS; index += 1) {
    const started = performance.now();
    const response = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    await response.text();
    if (response.status !== 200) throw new Error(`GET ${url} returned ${response.status}`);
    durations.push(performance.now() - started);
  }
  return median(durations);
}

seed();
const context = await createContext(config, { logger: createLogger('warn') });
const api = await startApi(context);
try {
  const counts: number[] = [];
  let jobs: Record<string, number> = {};
  for (let index = 0; index < REQUESTS; index += 1) {
    const started = performance.now();
    jobs = await countJobsByStatus(context.store.db);
    counts.push(performance.now() - started);
  }
  const metrics = await timeRequests(`${api.url}/metrics`);
  const state = await timeRequests(`${api.url}/api/state`);

  const total = Object.values(jobs).reduce((sum, count) => sum + count, 0);
  console.log(`${FINISHED_JOBS} finished jobs, ${ACTIVE_JOBS} per active status`);
  console.log(`jobs counted           ${total}`);
  console.log(`countJobsByStatus      ${median(counts).toFixed(2)} ms (median of ${REQUESTS})`);
  console.log(`GET /metrics           ${metrics.toFixed(2)} ms (median of ${REQUESTS})`);
  console.log(`GET /api/state         ${state.toFixed(2)} ms (median of ${REQUESTS})`);
} finally {
  await api.stop();
  await context.store.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}
