/**
 * SQLite prepares a statement again on every run when it compares the column of a partial
 * index's WHERE (`tasks.status = 'running'`) with a bound value, to learn whether the index
 * applies. This runs a job through trigger, claim, heartbeat, finish, lease recovery and the
 * reads of a queued job, records every SQL text prepared on the way, and checks that none
 * binds such a comparison.
 */
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { writePipelineFile } from '../support/execution.js';

interface PartialIndex {
  name: string;
  table: string;
  column: string;
}

/** Partial indexes whose WHERE compares a column with a constant, from sqlite_master. */
function partialIndexes(file: string): PartialIndex[] {
  const db = new Database(file, { readonly: true });
  try {
    const rows = db
      .prepare(`SELECT name, tbl_name AS "table", sql FROM sqlite_master WHERE type = 'index'`)
      .all() as { name: string; table: string; sql: string | null }[];
    return rows.flatMap((row) => {
      const match = /\bWHERE\s+"?(\w+)"?\s*=\s*'/i.exec(row.sql ?? '');
      return match === null ? [] : [{ name: row.name, table: row.table, column: match[1]! }];
    });
  } finally {
    db.close();
  }
}

/** Tells whether `text` compares `index.column` of `index.table` (by name or alias) with `?`. */
function bindsIndexColumn(text: string, index: PartialIndex): boolean {
  const table = new RegExp(`"${index.table}"(?: as "(\\w+)")?`, 'g');
  const names = [...text.matchAll(table)];
  if (names.length === 0) return false;
  const qualifiers = new Set([index.table, ...names.flatMap((match) => match[1] ?? [])]);
  // An UPDATE's assignments (`set "status" = ?`) are not comparisons.
  const conditions = text.replace(/\bset\b.*?\bwhere\b/s, 'where');
  const comparison = new RegExp(`(?:"(\\w+)"\\.)?"${index.column}" = \\?`, 'g');
  return [...conditions.matchAll(comparison)].some(
    (match) => match[1] === undefined || qualifiers.has(match[1]),
  );
}

describe('statements on columns of partial indexes', () => {
  let server: TestServer;
  const prepared = new Set<string>();

  beforeAll(async () => {
    const dir = makeTempDir();
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: docker
    image: busybox:latest
    steps: [{ name: work, run: 'true' }]
`);
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_MAX_TASK_ATTEMPTS: '1',
    });
    const original = Database.prototype.prepare;
    vi.spyOn(Database.prototype, 'prepare').mockImplementation(function (
      this: Database.Database,
      source: string,
    ) {
      prepared.add(source);
      return original.call(this, source);
    } as typeof original);
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await server?.close();
  });

  it('writes the constant into the text instead of binding it', async () => {
    const admin = { token: server.adminToken };
    const post = (path: string, body: unknown) => server.request('POST', path, { ...admin, body });
    expect(
      (
        await post('/api/agent/workers', {
          name: 'w',
          hostname: 'h',
          executors: ['docker'],
          capacity: 2,
        })
      ).status,
    ).toBe(200);

    // A job read while queued explains why no worker took it.
    const first = await post('/api/trigger/ci', { commit: 'abcdef1', branch: 'one' });
    expect(first.status).toBe(201);
    expect((await server.request('GET', `/api/job/${first.body.job_id}`, admin)).status).toBe(200);
    const claim = await post('/api/agent/workers/w/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const lease = { worker_id: 'w', attempt: task.attempt };
    expect((await post(`/api/agent/tasks/${task.task_id}/heartbeat`, lease)).status).toBe(200);
    const report = { ...lease, status: 'success', exit_code: 0, duration_ms: 1 };
    expect((await post(`/api/agent/tasks/${task.task_id}/finish`, report)).status).toBe(200);

    // A second job's lease runs out and the watchdog's recovery ends it.
    const second = await post('/api/trigger/ci', { commit: 'abcdef2', branch: 'two' });
    expect((await post('/api/agent/workers/w/claim', { max: 1, wait_seconds: 0 })).status).toBe(
      200,
    );
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ lease_expires_at: '2000-01-01T00:00:00.000Z' })
        .where('job_id', '=', second.body.job_id)
        .execute(),
    );
    const recovered = await recoverExpiredLeases(server.context, { actor: 'test' });
    expect(recovered.map((item) => item.jobId)).toEqual([second.body.job_id]);

    const indexes = partialIndexes(server.context.store.path);
    expect(indexes.map((index) => index.name)).toEqual(
      expect.arrayContaining(['tasks_lease', 'tasks_claim_order']),
    );
    const offending = [...prepared].filter((text) =>
      indexes.some((index) => bindsIndexColumn(text, index)),
    );
    expect(offending, offending.join('\n')).toEqual([]);
    // The check itself finds a bound comparison, and passes an assignment.
    const leaseIndex = indexes.find((index) => index.name === 'tasks_lease')!;
    expect(
      bindsIndexColumn('select "id" from "tasks" as "t" where "t"."status" = ?', leaseIndex),
    ).toBe(true);
    expect(bindsIndexColumn('update "tasks" set "status" = ? where "id" = ?', leaseIndex)).toBe(
      false,
    );
  });
});
