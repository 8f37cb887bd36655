/**
 * Job counts by status in GET /metrics and GET /api/state. Active statuses are counted from
 * the jobs index and finished ones read from job_status_counts, which triggers on jobs keep.
 * Each case checks both routes against a count of the jobs table itself.
 */
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { STATUSES, type Status } from '../../src/jobs/status.js';
import { runCleanup } from '../../src/orchestrator/cleanup.js';
import { runSweep } from '../../src/orchestrator/sweep.js';
import { ensureBuilt, startApiProcess } from '../support/cli.js';
import { queryPlan } from '../support/plan.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { finishJob, trigger, writePipelines } from '../orchestrator/helpers.js';

type Counts = Record<Status, number>;

const DAY = 86_400_000;

function zeroCounts(): Counts {
  return Object.fromEntries(STATUSES.map((status) => [status, 0])) as Counts;
}

/** Reads the slipway_jobs gauge of each status from a /metrics response. */
function parseJobGauges(text: string): Record<string, number> {
  const gauges: Record<string, number> = {};
  for (const match of text.matchAll(/^slipway_jobs\{status="(\w+)"\} (\d+)$/gm)) {
    gauges[match[1]!] = Number(match[2]);
  }
  return gauges;
}

async function fetchMetrics(url: string, token: string): Promise<string> {
  const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  return response.text();
}

describe('job counts by status', () => {
  let dir: string;
  let pipelines: string;
  let server: TestServer;
  /** The counts every route should show, updated by each case. */
  const expected = zeroCounts();

  beforeAll(async () => {
    dir = makeTempDir();
    pipelines = writePipelines(
      dir,
      `  build:
    executor: local
    concurrency: { group: branch, cancel_in_progress: true }
    steps: [{ run: 'true' }]
`,
    );
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: pipelines,
      RETENTION_JOBS_DAYS: '10',
    });
  });
  afterAll(async () => {
    await server.close();
  });

  /** Counts the rows of jobs by status with a full read of the table. */
  async function tableCounts(): Promise<Counts> {
    const rows = await server.context.store.db
      .selectFrom('jobs')
      .select(['status', (eb) => eb.fn.countAll<number>().as('count')])
      .groupBy('status')
      .execute();
    const counts = zeroCounts();
    for (const row of rows) counts[row.status] = Number(row.count);
    return counts;
  }

  /** Checks the table, /metrics and /api/state against `expected`. */
  async function expectCounts(): Promise<void> {
    // The table check proves that `expected` itself is right.
    expect(await tableCounts()).toEqual(expected);
    const gauges = parseJobGauges(await fetchMetrics(server.url, server.adminToken));
    expect(gauges).toEqual(expected);
    const state = await server.request('GET', '/api/state', { token: server.adminToken });
    expect(state.status).toBe(200);
    const present = Object.entries(expected).filter(([, count]) => count > 0);
    expect(state.body.jobs).toEqual(Object.fromEntries(present));
  }

  async function setStatus(id: string, status: Status): Promise<void> {
    const response = await server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status },
    });
    expect(response.status, response.text).toBe(200);
  }

  async function cancel(id: string): Promise<void> {
    const response = await server.request('POST', `/api/job/${id}/cancel`, {
      token: server.adminToken,
    });
    expect(response.status, response.text).toBe(202);
  }

  async function retry(id: string): Promise<string> {
    const response = await server.request('POST', `/api/job/${id}/retry`, {
      token: server.adminToken,
    });
    expect(response.status, response.text).toBe(201);
    return response.body.status;
  }

  const jobs: Record<string, string> = {};

  it('counts zero on an empty database', async () => {
    await expectCounts();
  });

  it('counts triggered jobs', async () => {
    jobs.ciA = (await trigger(server, 'ci', 'a1a1a1a1a1')).job_id;
    jobs.ciB = (await trigger(server, 'ci', 'b1b1b1b1b1', { branch: 'other' })).job_id;
    const tests = await trigger(server, 'integration-tests', 'a1a1a1a1a1');
    expect(tests.status).toBe('waiting');
    jobs.testsA = tests.job_id;
    expected.queued = 2;
    expected.waiting = 1;
    await expectCounts();
  });

  it('counts status changes', async () => {
    await finishJob(server, jobs.ciA!, 'success');
    // The success releases integration-tests of the same commit.
    expected.queued = 2;
    expected.waiting = 0;
    expected.success = 1;
    await expectCounts();

    await finishJob(server, jobs.ciB!, 'failure');
    expected.queued = 1;
    expected.failure = 1;
    await expectCounts();

    await setStatus(jobs.testsA!, 'running');
    expected.queued = 0;
    expected.running = 1;
    await expectCounts();

    await setStatus(jobs.testsA!, 'timed_out');
    expected.running = 0;
    expected.timed_out = 1;
    await expectCounts();
  });

  it('counts cancels', async () => {
    const first = await trigger(server, 'build', 'c1c1c1c1c1');
    const second = await trigger(server, 'build', 'c2c2c2c2c2');
    // cancel_in_progress ends the first build of the branch.
    expected.queued = 1;
    expected.cancelled = 1;
    await expectCounts();

    await cancel(second.job_id);
    expected.queued = 0;
    expected.cancelled = 2;
    await expectCounts();
    jobs.buildFirst = first.job_id;
  });

  it('counts jobs inserted as skipped', async () => {
    // ci of this commit failed, so the job is inserted skipped.
    const tests = await trigger(server, 'integration-tests', 'b1b1b1b1b1');
    expect(tests.status).toBe('skipped');
    jobs.testsB = tests.job_id;
    expected.skipped = 1;
    await expectCounts();
  });

  it('counts retries', async () => {
    expect(await retry(jobs.ciB!)).toBe('queued');
    expected.failure = 0;
    expected.queued = 1;
    await expectCounts();

    // ci of the commit is queued again, so integration-tests waits for it.
    expect(await retry(jobs.testsB!)).toBe('waiting');
    expected.skipped = 0;
    expected.waiting = 1;
    await expectCounts();

    // A retry from one finished status to another.
    const waiting = await trigger(server, 'integration-tests', 'd1d1d1d1d1');
    await cancel(waiting.job_id);
    const ci = await trigger(server, 'ci', 'd1d1d1d1d1');
    await finishJob(server, ci.job_id, 'error');
    expect(await retry(waiting.job_id)).toBe('skipped');
    // The skipped attempt gets the job_finished row of every end.
    const finished = await server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'job_finished')
      .where('job_id', '=', waiting.job_id)
      .orderBy('id')
      .execute();
    expect(finished.map((row) => JSON.parse(row.details).attempt)).toEqual([1, 2]);
    expect(JSON.parse(finished[1]!.details).status).toBe('skipped');
    expected.cancelled = 2;
    expected.error = 1;
    expected.skipped = 1;
    await expectCounts();
  });

  it('counts jobs deleted by cleanup', async () => {
    // ciA (success) and the first build (cancelled) finished 20 days ago.
    const old = new Date(Date.now() - 20 * DAY).toISOString();
    await server.context.store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ created_at: old, finished_at: old })
        .where('id', 'in', [jobs.ciA!, jobs.buildFirst!])
        .execute(),
    );
    const summary = await runCleanup(server.context, { actor: 'test' });
    expect(summary.jobs).toBe(2);
    expected.success = 0;
    expected.cancelled = 1;
    await expectCounts();
  });

  it('counts jobs written by a second process', async () => {
    await ensureBuilt();
    const other = await startApiProcess({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_ADMIN_TOKEN: server.adminToken,
    });
    try {
      const post = async (urlPath: string, body: unknown) => {
        const response = await fetch(`${other.url}${urlPath}`, {
          method: urlPath.endsWith('/status') ? 'PATCH' : 'POST',
          headers: {
            authorization: `Bearer ${server.adminToken}`,
            'content-type': 'application/json',
          },
          body: JSON.stringify(body),
        });
        expect(response.status, await response.clone().text()).toBeLessThan(300);
        return (await response.json()) as { job_id: string };
      };
      const done = await post('/api/trigger/ci', { commit: 'e1e1e1e1e1', branch: 'e' });
      await post(`/api/job/${done.job_id}/status`, { status: 'running' });
      await post(`/api/job/${done.job_id}/status`, { status: 'success', exit_code: 0 });
      const cancelled = await post('/api/trigger/ci', { commit: 'e2e2e2e2e2', branch: 'e' });
      await post(`/api/job/${cancelled.job_id}/cancel`, {});
      await post('/api/trigger/ci', { commit: 'e3e3e3e3e3', branch: 'e' });
      expected.success = 1;
      expected.cancelled = 2;
      expected.queued = 2;
      await expectCounts();
      expect(parseJobGauges(await fetchMetrics(other.url, server.adminToken))).toEqual(expected);
    } finally {
      await other.stop();
    }
  });

  it('repairs counts written without the triggers', async () => {
    // What a hand-edited or restored file could leave: counts that no longer match the jobs.
    await server.context.store.write(async (trx) => {
      await trx
        .updateTable('job_status_counts')
        .set({ count: 99 })
        .where('status', '=', 'success')
        .execute();
      await trx
        .updateTable('job_status_counts')
        .set({ count: 0 })
        .where('status', '=', 'cancelled')
        .execute();
    });
    const summary = await runSweep(server.context, { actor: 'orchestrator' });
    expect(summary.jobCountsRepaired).toBe(2);
    await expectCounts();
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'state_repaired')
      .orderBy('id')
      .execute();
    const repairs = rows.map(
      (row) => JSON.parse(row.details) as { name: string; from: number; to: number },
    );
    expect(repairs).toEqual([
      expect.objectContaining({
        name: 'job_status_counts.cancelled',
        from: 0,
        to: expected.cancelled,
      }),
      expect.objectContaining({
        name: 'job_status_counts.success',
        from: 99,
        to: expected.success,
      }),
    ]);
    // A second sweep finds nothing left to repair.
    expect((await runSweep(server.context, { actor: 'orchestrator' })).jobCountsRepaired).toBe(0);
  });
});

describe('job count scrape', () => {
  let server: TestServer;
  const prepared: string[] = [];

  beforeAll(async () => {
    server = await startTestServer();
    // Finished jobs written into the file by another connection.
    const sqlite = new BetterSqlite3(server.context.store.path);
    const insert = sqlite.prepare(
      `INSERT INTO jobs (id, type, status, created_at, finished_at, updated_at)
       VALUES (?, 'ci', ?, ?, ?, ?)`,
    );
    const now = new Date().toISOString();
    sqlite.transaction(() => {
      for (let index = 0; index < 1000; index += 1) {
        insert.run(`ci-${index.toString(16).padStart(8, '0')}`, 'success', now, now, now);
      }
    })();
    sqlite.close();
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await server.close();
  });

  it('reads no finished job', async () => {
    const original = BetterSqlite3.prototype.prepare;
    vi.spyOn(BetterSqlite3.prototype, 'prepare').mockImplementation(function (
      this: BetterSqlite3.Database,
      source: string,
    ) {
      prepared.push(source);
      return original.call(this, source);
    } as typeof original);
    const metrics = await fetchMetrics(server.url, server.adminToken);
    const state = await server.request('GET', '/api/state', { token: server.adminToken });
    vi.restoreAllMocks();
    expect(parseJobGauges(metrics).success).toBe(1000);
    expect(state.body.jobs).toEqual({ success: 1000 });

    const reads = prepared.filter((source) => /\bfrom "jobs"/i.test(source));
    expect(reads.length).toBeGreaterThan(0);
    const sqlite = new BetterSqlite3(server.context.store.path, { readonly: true });
    try {
      for (const source of reads) {
        // The plan does not depend on the bound values, so each parameter is null.
        const parameters = Array.from(source.matchAll(/\?/g), () => null);
        const plan = queryPlan(sqlite, source, parameters);
        expect(plan, source).not.toMatch(/\bSCAN jobs\b/);
        expect(plan, source).toMatch(
          /SEARCH jobs USING COVERING INDEX jobs_status_created \(status=\?\)/,
        );
      }
    } finally {
      sqlite.close();
    }
  });
});
