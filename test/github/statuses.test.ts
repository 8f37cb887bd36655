import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteOldReports, pruneGitHubRecords } from '../../src/github/prune.js';
import { GitHubService } from '../../src/github/service.js';
import { isoAfter } from '../../src/util/time.js';
import { queryPlan } from '../support/plan.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import type { StandinStatus } from '../support/github-standin.js';
import { FAST_GITHUB, startGitHubSetup, waitFor, type GitHubSetup } from './helpers.js';

const PUBLIC_URL = 'http://127.0.0.1:5999';
let commitCounter = 0;

/** Returns a fresh full commit SHA per test, so statuses of tests never mix. */
function nextCommit(): string {
  commitCounter += 1;
  return commitCounter.toString(16).padStart(40, 'c');
}

async function trigger(server: TestServer, commit: string, body: Record<string, unknown> = {}) {
  const response = await server.request('POST', '/api/trigger/ci', {
    token: server.adminToken,
    body: { commit, branch: `branch-${commit.slice(-6)}`, ...body },
  });
  expect(response.status).toBe(201);
  return response.body.job_id as string;
}

async function setStatus(server: TestServer, jobId: string, status: string, reason?: string) {
  const response = await server.request('PATCH', `/api/job/${jobId}/status`, {
    token: server.adminToken,
    body: reason === undefined ? { status } : { status, reason },
  });
  expect(response.status).toBe(200);
  return response;
}

/** Gives the commit status sender lease to `holder` until `expiresAt`. */
async function setLease(server: TestServer, holder: string, expiresAt: string) {
  await server.context.store.write((trx) =>
    trx
      .updateTable('scheduler_locks')
      .set({ holder, expires_at: expiresAt })
      .where('name', '=', 'github-status-sender')
      .execute(),
  );
}

function lastState(statuses: StandinStatus[]): string | undefined {
  return statuses.at(-1)?.state;
}

/** Fails when a context got a pending status after a final one. */
function expectNoRegression(statuses: StandinStatus[]) {
  const firstFinal = statuses.findIndex((status) => status.state !== 'pending');
  if (firstFinal === -1) return;
  expect(statuses.slice(firstFinal).map((status) => status.state)).not.toContain('pending');
}

describe('commit statuses', () => {
  let setup: GitHubSetup;

  beforeAll(async () => {
    setup = await startGitHubSetup({ SLIPWAY_PUBLIC_URL: PUBLIC_URL });
  });
  afterAll(async () => {
    await setup.close();
  });

  it('reports the job and each matrix task', async () => {
    const commit = nextCommit();
    const jobId = await trigger(setup.server, commit, { python_versions: ['3.11', '3.12'] });

    for (const context of ['slipway/ci', 'slipway/ci (3.11)', 'slipway/ci (3.12)']) {
      const pending = await waitFor(
        () => setup.standin.statusesFor(commit, context)[0],
        5_000,
        `pending status of ${context}`,
      );
      expect(pending.state).toBe('pending');
      expect(pending.description).toBe('queued');
      expect(pending.target_url).toBe(`${PUBLIC_URL}/api/job/${jobId}`);
    }

    await setStatus(setup.server, jobId, 'running');
    await setStatus(setup.server, jobId, 'success');

    for (const context of ['slipway/ci', 'slipway/ci (3.11)', 'slipway/ci (3.12)']) {
      await waitFor(
        () =>
          lastState(setup.standin.statusesFor(commit, context)) === 'success' ? true : undefined,
        5_000,
        `success status of ${context}`,
      );
      const statuses = setup.standin.statusesFor(commit, context);
      expect(statuses.at(-1)?.description).toMatch(/^succeeded/);
      expectNoRegression(statuses);
    }
    const posts = setup.standin.requests.filter((r) => r.path.endsWith(commit));
    expect(posts.every((r) => r.authorization === `token ${setup.standin.token}`)).toBe(true);
  });

  it('maps failure, cancel and error to GitHub states with the reason', async () => {
    const failed = nextCommit();
    const failedJob = await trigger(setup.server, failed);
    await setStatus(setup.server, failedJob, 'running');
    await setStatus(setup.server, failedJob, 'failure', 'test: a step exited with code 1');

    const cancelled = nextCommit();
    const cancelledJob = await trigger(setup.server, cancelled);
    const cancel = await setup.server.request('POST', `/api/job/${cancelledJob}/cancel`, {
      token: setup.server.adminToken,
      body: { reason: 'stopped by a test' },
    });
    expect(cancel.status).toBe(202);

    const failure = await waitFor(() => {
      const last = setup.standin.statusesFor(failed, 'slipway/ci').at(-1);
      return last?.state === 'failure' ? last : undefined;
    });
    expect(failure.description).toContain('a step exited with code 1');
    const error = await waitFor(() => {
      const last = setup.standin.statusesFor(cancelled, 'slipway/ci').at(-1);
      return last?.state === 'error' ? last : undefined;
    });
    expect(error.description).toContain('cancelled');
  });

  it('cuts long descriptions between characters', async () => {
    const commit = nextCommit();
    const jobId = await trigger(setup.server, commit);
    // "cancelled: " and 127 letters fill 138 UTF-16 code units, so a cut after 139 units would
    // fall inside the surrogate pair of the first emoji.
    const reason = `${'a'.repeat(127)}${'\u{1F680}'.repeat(5)}`;
    const cancel = await setup.server.request('POST', `/api/job/${jobId}/cancel`, {
      token: setup.server.adminToken,
      body: { reason },
    });
    expect(cancel.status).toBe(202);

    const report = await waitFor(() =>
      setup.server.context.store.db
        .selectFrom('github_status_outbox')
        .select(['outcome', 'last_error'])
        .where('commit_sha', '=', commit)
        .where('context', '=', 'slipway/ci')
        .where('status', '=', 'cancelled')
        .where('outcome', '!=', 'pending')
        .executeTakeFirst(),
    );
    expect(report.outcome, report.last_error ?? '').toBe('sent');
    const status = setup.standin.statusesFor(commit, 'slipway/ci').at(-1)!;
    expect(status.description!.length).toBeLessThanOrEqual(140);
    expect(status.description).toBe(`cancelled: ${'a'.repeat(127)}…`);
  });

  it('keeps the newest job when an older one is cancelled', async () => {
    const commit = nextCommit();
    // Same branch: the second trigger cancels the first (cancel-in-progress).
    const first = await trigger(setup.server, commit, { branch: 'main-newest' });
    const second = await trigger(setup.server, commit, { branch: 'main-newest' });
    const firstJob = await setup.server.request('GET', `/api/job/${first}`, {
      token: setup.server.adminToken,
    });
    expect(firstJob.body.status).toBe('cancelled');

    await setStatus(setup.server, second, 'running');
    await waitFor(() => {
      const last = setup.standin.statusesFor(commit, 'slipway/ci').at(-1);
      return last?.description === 'running' ? last : undefined;
    });
    const statuses = setup.standin.statusesFor(commit, 'slipway/ci');
    expect(statuses.some((status) => status.state === 'error')).toBe(false);
    expect(statuses.every((status) => status.target_url?.endsWith(second))).toBe(true);
  });

  it('never blocks a job and reports in order after GitHub recovers', async () => {
    const commit = nextCommit();
    setup.standin.setDown(true);
    let jobId: string;
    try {
      jobId = await trigger(setup.server, commit);
      const started = Date.now();
      await setStatus(setup.server, jobId, 'running');
      await setStatus(setup.server, jobId, 'success');
      expect(Date.now() - started).toBeLessThan(2_000);
      const job = await setup.server.request('GET', `/api/job/${jobId}`, {
        token: setup.server.adminToken,
      });
      expect(job.body.status).toBe('success');
      // Wait until the sender has tried and backed off at least once.
      await waitFor(async () => {
        const row = await setup.server.context.store.db
          .selectFrom('github_status_outbox')
          .select(['attempts', 'last_error'])
          .where('commit_sha', '=', commit)
          .where('outcome', '=', 'pending')
          .where('attempts', '>', 0)
          .executeTakeFirst();
        return row;
      });
    } finally {
      setup.standin.setDown(false);
    }
    const success = await waitFor(() => {
      const last = setup.standin.statusesFor(commit, 'slipway/ci').at(-1);
      return last?.state === 'success' ? last : undefined;
    });
    expect(success.target_url).toContain(jobId);
    expectNoRegression(setup.standin.statusesFor(commit, 'slipway/ci'));
    // The stand-in records the request before the sender marks the row sent.
    const outbox = await waitFor(async () => {
      const rows = await setup.server.context.store.db
        .selectFrom('github_status_outbox')
        .select(['outcome', 'state'])
        .where('commit_sha', '=', commit)
        .where('context', '=', 'slipway/ci')
        .orderBy('id')
        .execute();
      return rows.at(-1)?.outcome === 'sent' ? rows : undefined;
    });
    expect(outbox.at(-1)).toEqual({ outcome: 'sent', state: 'success' });
    expect(outbox.filter((row) => row.outcome === 'pending')).toEqual([]);
  });

  it('skips reports replaced while a send hangs', async () => {
    const commit = nextCommit();
    setup.standin.failNext(1, { kind: 'slow-502', delayMs: 1_500 }, new RegExp(commit));
    const jobId = await trigger(setup.server, commit, { python_versions: ['3.10', '3.11'] });
    // The first report hangs, and the others of its batch wait behind it.
    await waitFor(() => setup.standin.requests.find((request) => request.path.includes(commit)));
    await setStatus(setup.server, jobId, 'running');
    await setStatus(setup.server, jobId, 'success');

    const contexts = await waitFor(async () => {
      const rows = await setup.server.context.store.db
        .selectFrom('github_status_outbox')
        .select(['context', 'outcome', 'state'])
        .where('commit_sha', '=', commit)
        .execute();
      const settled = rows.every((row) => row.outcome !== 'pending');
      return settled ? [...new Set(rows.map((row) => row.context))] : undefined;
    });
    expect(contexts).toHaveLength(3);
    for (const context of contexts) {
      const states = setup.standin.statusesFor(commit, context).map((status) => status.state);
      expect(states.at(-1), context).toBe('success');
    }
    // The reports queued behind the one that hung were replaced before their turn, so the
    // task contexts got only their final status.
    for (const context of contexts.filter((name) => name !== 'slipway/ci')) {
      const states = setup.standin.statusesFor(commit, context).map((status) => status.state);
      expect(states, context).toEqual(['success']);
    }
  });

  it('stops sending after losing the lease', async () => {
    const commit = nextCommit();
    setup.standin.failNext(1, { kind: 'slow-502', delayMs: 1_000 }, new RegExp(commit));
    const jobId = await trigger(setup.server, commit);
    await waitFor(() => setup.standin.requests.find((request) => request.path.includes(commit)));
    // While the first report hangs, another API process takes the expired lease, and the job
    // ends. That process would send the final status.
    await setLease(setup.server, 'other-host:1:status-sender', isoAfter(60_000));
    try {
      await setStatus(setup.server, jobId, 'running');
      await setStatus(setup.server, jobId, 'success');
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const states = setup.standin.statusesFor(commit, 'slipway/ci').map((status) => status.state);
      expect(states).toEqual(['pending']);
    } finally {
      await setLease(setup.server, 'other-host:1:status-sender', isoAfter(0));
    }

    await waitFor(
      () =>
        lastState(setup.standin.statusesFor(commit, 'slipway/ci')) === 'success' ? true : undefined,
      5_000,
      'success status after the lease expired',
    );
  });

  it('reports a job created waiting', async () => {
    const commit = nextCommit();
    const response = await setup.server.request('POST', '/api/trigger/integration-tests', {
      token: setup.server.adminToken,
      body: { commit },
    });
    expect(response.body.status).toBe('waiting');
    const pending = await waitFor(
      () => setup.standin.statusesFor(commit, 'slipway/integration-tests')[0],
      5_000,
      'the waiting status',
    );
    expect(pending.state).toBe('pending');
    expect(pending.description).toMatch(/^waiting/);
  });

  it('reports changes made without an event', async () => {
    const commit = nextCommit();
    const jobId = await trigger(setup.server, commit);
    await waitFor(() => setup.standin.statusesFor(commit, 'slipway/ci')[0]);
    // Another process (the orchestrator) changes rows without this process's events.
    await setup.server.context.store.write(async (trx) => {
      const now = new Date().toISOString();
      await trx
        .updateTable('tasks')
        .set({ status: 'error', reason: 'worker lost', finished_at: now, updated_at: now })
        .where('job_id', '=', jobId)
        .execute();
      await trx
        .updateTable('jobs')
        .set({ status: 'error', reason: 'worker lost', finished_at: now, updated_at: now })
        .where('id', '=', jobId)
        .execute();
    });
    const error = await waitFor(() => {
      const last = setup.standin.statusesFor(commit, 'slipway/ci').at(-1);
      return last?.state === 'error' ? last : undefined;
    });
    expect(error.description).toBe('error: worker lost');
  });

  it('does not report commits that are not full SHAs', async () => {
    const short = 'abc1234';
    const jobId = await trigger(setup.server, short);
    await setStatus(setup.server, jobId, 'running');
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(setup.standin.requests.some((r) => r.path.includes('/statuses/'))).toBe(true);
    expect(setup.standin.requests.some((r) => r.path.endsWith(short))).toBe(false);
    const rows = await setup.server.context.store.db
      .selectFrom('github_status_outbox')
      .select('id')
      .where('job_id', '=', jobId)
      .execute();
    expect(rows).toEqual([]);
  });
});

describe('commit statuses under a rate limit', () => {
  it('pauses every report until the reset', async () => {
    const setup = await startGitHubSetup();
    try {
      const commit = nextCommit();
      // A reset further away than the client waits within one request, as after an hour of
      // heavy use.
      setup.standin.failNext(1, { kind: 'rate-limit', resetInSeconds: 600 }, /statuses/);
      await trigger(setup.server, commit, { python_versions: ['3.11', '3.12'] });
      const limited = await waitFor(() =>
        setup.standin.requests.find((request) => request.status === 403),
      );
      await new Promise((resolve) => setTimeout(resolve, 2_000));

      const later = setup.standin.requests
        .filter((request) => request.at > limited.at)
        .map((request) => `${request.method} ${request.path}`);
      expect(later).toEqual([]);
      const pending = await setup.server.context.store.db
        .selectFrom('github_status_outbox')
        .select('outcome')
        .where('commit_sha', '=', commit)
        .execute();
      expect(pending.map((row) => row.outcome)).toEqual(['pending', 'pending', 'pending']);
    } finally {
      await setup.close();
    }
  });
});

describe('commit statuses across a restart', () => {
  it('sends reports written before the restart', async () => {
    const dataDir = makeTempDir();
    const commit = nextCommit();
    const first = await startGitHubSetup({ SLIPWAY_DATA_DIR: dataDir });
    first.standin.setDown(true);
    const jobId = await trigger(first.server, commit);
    await setStatus(first.server, jobId, 'running');
    await setStatus(first.server, jobId, 'success');
    await waitFor(async () =>
      first.server.context.store.db
        .selectFrom('github_status_outbox')
        .select('id')
        .where('commit_sha', '=', commit)
        .where('state', '=', 'success')
        .executeTakeFirst(),
    );
    await first.close();
    expect(first.standin.statuses).toEqual([]);

    const second = await startGitHubSetup({ SLIPWAY_DATA_DIR: dataDir });
    try {
      const success = await waitFor(() => {
        const last = second.standin.statusesFor(commit, 'slipway/ci').at(-1);
        return last?.state === 'success' ? last : undefined;
      });
      expect(success.description).toMatch(/^succeeded/);
      // The older pending reports were superseded, not sent after the newer one.
      expect(second.standin.statusesFor(commit, 'slipway/ci').map((s) => s.state)).toEqual([
        'success',
      ]);
    } finally {
      await second.close();
    }
  });
});

describe('commit statuses turned on', () => {
  it('skip jobs that ended before', async () => {
    const dataDir = makeTempDir();
    const before = nextCommit();
    const plain = await startTestServer({ SLIPWAY_DATA_DIR: dataDir });
    const oldJob = await trigger(plain, before);
    await setStatus(plain, oldJob, 'running');
    await setStatus(plain, oldJob, 'success');
    await plain.close();

    const after = nextCommit();
    const setup = await startGitHubSetup({ SLIPWAY_DATA_DIR: dataDir });
    try {
      const jobId = await trigger(setup.server, after);
      await setStatus(setup.server, jobId, 'running');
      await setStatus(setup.server, jobId, 'success');
      await waitFor(() => lastState(setup.standin.statusesFor(after, 'slipway/ci')) === 'success');
      // Several reconcile passes (200 ms apart here) have run since the start.
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect(setup.standin.statusesFor(before, 'slipway/ci')).toEqual([]);
    } finally {
      await setup.close();
    }
  });
});

describe('without GITHUB_TOKEN', () => {
  it('says in the start log that GitHub reporting is off', async () => {
    const logs: string[] = [];
    const server = await startTestServer(
      {},
      {
        prepare(context) {
          context.logger = pino(
            { level: 'info' },
            { write: (line: string) => void logs.push(line) },
          );
          context.github = new GitHubService(context, FAST_GITHUB);
        },
      },
    );
    try {
      expect(logs.join('\n')).toContain('GitHub reporting is off: GITHUB_TOKEN is not set');
      const jobId = await trigger(server, nextCommit());
      await setStatus(server, jobId, 'running');
      const rows = await server.context.store.db
        .selectFrom('github_status_outbox')
        .select('id')
        .execute();
      expect(rows).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe('pruneGitHubRecords', () => {
  it('deletes old finished reports and deliveries', async () => {
    const server = await startTestServer({ RETENTION_JOBS_DAYS: '1' });
    try {
      const old = '2020-01-01T00:00:00.000Z';
      const recent = new Date().toISOString();
      await server.context.store.write(async (trx) => {
        const reports = [
          ...(['sent', 'superseded', 'failed', 'pending'] as const).map((outcome) => ({
            outcome,
            created_at: old,
          })),
          { outcome: 'sent' as const, created_at: recent },
        ];
        for (const { outcome, created_at } of reports) {
          await trx
            .insertInto('github_status_outbox')
            .values({
              repository: 'octo-org/hello-world',
              commit_sha: 'a'.repeat(40),
              context: `slipway/${outcome}`,
              state: 'success',
              description: 'succeeded',
              target_url: null,
              job_id: 'ci-00000000',
              task_id: null,
              status: 'success',
              outcome,
              attempts: 1,
              next_attempt_at: created_at,
              last_error: null,
              created_at,
              sent_at: null,
            })
            .execute();
        }
        await trx
          .insertInto('github_webhook_deliveries')
          .values({
            delivery_id: 'old-delivery',
            event: 'ping',
            outcome: 'ping',
            job_id: null,
            details: '{}',
            received_at: old,
          })
          .execute();
      });

      const summary = await pruneGitHubRecords(server.context, { actor: 'test' });

      expect(summary).toEqual({ statusReports: 3, webhookDeliveries: 1 });
      const left = await server.context.store.db
        .selectFrom('github_status_outbox')
        .select(['outcome', 'created_at'])
        .orderBy('id')
        .execute();
      expect(left).toEqual([
        { outcome: 'pending', created_at: old },
        { outcome: 'sent', created_at: recent },
      ]);

      // The delete reads only the ids below the first report it keeps.
      const query = (await deleteOldReports(server.context.store.db, old)).compile();
      const plan = server.context.store.read((sqlite) =>
        queryPlan(sqlite, query.sql, query.parameters),
      );
      expect(plan).toMatch(/SEARCH github_status_outbox USING INTEGER PRIMARY KEY \(rowid<\?\)/);
      const audit = await server.context.store.db
        .selectFrom('audit_log')
        .select('details')
        .where('action', '=', 'github_records_pruned')
        .execute();
      expect(audit).toHaveLength(1);
      expect(JSON.parse(audit[0]!.details).statusReports).toBe(3);
    } finally {
      await server.close();
    }
  });
});
