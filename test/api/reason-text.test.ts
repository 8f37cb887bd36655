/**
 * Reasons reach logs, audit rows, GitHub and terminals. A person's reason with a control
 * character is rejected. A worker's reason is stored escaped instead, because a worker drops a
 * finish report that gets 400, and the task would lose its outcome.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/worker/client.js';
import { writePipelineFile } from '../support/execution.js';
import { countRows, lastUpdate } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface LogLine {
  level: number;
  msg: string;
  taskId?: string;
}

/** Returns a stream that parses each log line written to it into `lines`. */
function capture(lines: LogLine[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as LogLine);
      }
      done();
    },
  });
}

/** Reasons with a control character, each named for the test table. */
const CONTROL_REASONS: Array<[string, string]> = [
  ['escape sequence', 'a\u001b[2Jb'],
  ['carriage return', 'done\rfake line'],
  ['line feed', 'done\n[slipway] task ended success'],
  ['NUL', 'a\u0000b'],
  ['DEL', 'a\u007fb'],
  ['C1 CSI', 'a\u009b2Jb'],
  ['line separator', 'done\u2028[slipway] task ended success'],
  ['paragraph separator', 'done\u2029fake line'],
];

const ESCAPED =
  'step "test" failed: line one\\nline two \\u001b[2J\\r end\\u0000 \\u2028 \\u202etxt.exe\\u2066';
const RAW =
  'step "test" failed: line one\nline two \u001b[2J\r end\u0000 \u2028 \u202etxt.exe\u2066';

describe('reason text', () => {
  let server: TestServer;
  let agent: string;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps:
      - name: test
        run: 'true'
`);
    server = await startTestServer(
      { SLIPWAY_PIPELINES: pipelines, SLIPWAY_LEASE_SECONDS: '30' },
      { logger: pino({ level: 'warn' }, capture(lines)) },
    );
    agent = await server.token('agent', 'agent-reasons');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name: 'worker-r', hostname: 'host-r', executors: ['local'], capacity: 8 },
    });
    expect(registered.status, registered.text).toBe(200);
  });
  afterAll(async () => {
    await server?.close();
  });

  // Each test cancels the jobs it left queued or running, so that claimTask, which gets the
  // oldest queued task, gets the task of its own job.
  const jobIds: string[] = [];
  afterEach(async () => {
    for (const jobId of jobIds.splice(0)) {
      const cancelled = await server.request('POST', `/api/job/${jobId}/cancel`, {
        token: server.adminToken,
      });
      expect([202, 409]).toContain(cancelled.status);
    }
  });

  let branchCounter = 0;
  async function triggerJob(): Promise<string> {
    branchCounter += 1;
    const created = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: `reasons-${branchCounter}` },
    });
    expect(created.status, created.text).toBe(201);
    jobIds.push(created.body.job_id as string);
    return created.body.job_id as string;
  }

  async function claimTask(): Promise<{ jobId: string; taskId: string; attempt: number }> {
    const jobId = await triggerJob();
    const claimed = await server.request('POST', '/api/agent/workers/worker-r/claim', {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(claimed.status, claimed.text).toBe(200);
    expect(claimed.body.tasks).toHaveLength(1);
    const task = claimed.body.tasks[0] as { task_id: string; attempt: number };
    expect(task.task_id.startsWith(jobId)).toBe(true);
    return { jobId, taskId: task.task_id, attempt: task.attempt };
  }

  async function auditReason(action: string, taskId: string): Promise<unknown> {
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', action)
      .where('task_id', '=', taskId)
      .execute();
    expect(rows).toHaveLength(1);
    return (JSON.parse(rows[0]!.details) as { reason: unknown }).reason;
  }

  function escapeWarnings(taskId: string): LogLine[] {
    return lines.filter(
      (line) => line.taskId === taskId && line.msg.includes('with control characters'),
    );
  }

  const personRoutes = [
    { route: 'cancel', method: 'POST', path: '/cancel', body: {} },
    { route: 'status update', method: 'PATCH', path: '/status', body: { status: 'cancelled' } },
  ];

  describe.each(personRoutes)('$route', ({ method, path, body }) => {
    it.each(CONTROL_REASONS)('rejects a reason with %s', async (_name, reason) => {
      const jobId = await triggerJob();
      const rowsBefore = await countRows(server.context.store.db);
      const updatedBefore = await lastUpdate(server.context.store.db);

      const response = await server.request(method, `/api/job/${jobId}${path}`, {
        token: server.adminToken,
        body: { ...body, reason },
      });

      expect(response.status, response.text).toBe(400);
      expect(response.body.code).toBe('validation_failed');
      expect(response.body.field).toBe('reason');
      expect(response.body.rule).toBe('printable');
      expect(response.body.error).toBe(
        'reason must not contain a control character other than tab (such as a line break, ' +
          'carriage return, escape or NUL) or a line or paragraph separator (U+2028, U+2029)',
      );
      expect(await countRows(server.context.store.db)).toEqual(rowsBefore);
      expect(await lastUpdate(server.context.store.db)).toBe(updatedBefore);
      const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
      expect(job.body.status).toBe('queued');
    });

    it.each([
      ['a tab', 'flaky runner\tsee the dashboard'],
      ['letters past C1', 'd\u00e9ploiement\u00a0annul\u00e9 \u00fc \u{1f680}'],
      // Right-to-left text uses bidirectional marks and isolates, which a client escapes.
      ['bidirectional isolates', '\u2067\u05d1\u05d9\u05d8\u05d5\u05dc\u2069 \u200f'],
    ])('accepts a reason with %s', async (_name, reason) => {
      const jobId = await triggerJob();
      const response = await server.request(method, `/api/job/${jobId}${path}`, {
        token: server.adminToken,
        body: { ...body, reason },
      });

      expect(response.status, response.text).toBeLessThan(300);
      expect(response.body.status).toBe('cancelled');
      expect(response.body.tasks[0].reason).toBe(reason);
    });
  });

  it("finish escapes an older worker's reason", async () => {
    const { jobId, taskId, attempt } = await claimTask();
    const report = {
      worker_id: 'worker-r',
      attempt,
      status: 'failure',
      exit_code: 1,
      reason: RAW,
      duration_ms: 12,
    };

    const finished = await server.request('POST', `/api/agent/tasks/${taskId}/finish`, {
      token: agent,
      body: report,
    });

    expect(finished.status, finished.text).toBe(200);
    expect(finished.body.status).toBe('failure');
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.tasks[0].reason).toBe(ESCAPED);
    expect(await auditReason('task_finished', taskId)).toBe(ESCAPED);
    expect(escapeWarnings(taskId)).toHaveLength(1);

    // A worker whose response was lost sends the same report again; it is not a lost lease.
    const repeated = await server.request('POST', `/api/agent/tasks/${taskId}/finish`, {
      token: agent,
      body: report,
    });
    expect(repeated.status, repeated.text).toBe(200);
  });

  it("release escapes an older worker's reason", async () => {
    const { jobId, taskId, attempt } = await claimTask();

    const released = await server.request('POST', `/api/agent/tasks/${taskId}/release`, {
      token: agent,
      body: { worker_id: 'worker-r', attempt, reason: RAW },
    });

    expect(released.status, released.text).toBe(200);
    expect(released.body.status).toBe('queued');
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.tasks[0].reason).toBe(ESCAPED);
    expect(await auditReason('task_released', taskId)).toBe(ESCAPED);
    expect(escapeWarnings(taskId)).toHaveLength(1);
  });

  it('cuts an escaped reason that grows', async () => {
    const { jobId, taskId, attempt } = await claimTask();
    const finished = await server.request('POST', `/api/agent/tasks/${taskId}/finish`, {
      token: agent,
      body: {
        worker_id: 'worker-r',
        attempt,
        status: 'failure',
        exit_code: 1,
        reason: '\n'.repeat(2000),
        duration_ms: 12,
      },
    });

    expect(finished.status, finished.text).toBe(200);
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    const stored = job.body.tasks[0].reason as string;
    expect(stored).toHaveLength(2000);
    expect(stored.startsWith('\\n\\n')).toBe(true);
    expect(stored.endsWith('…')).toBe(true);
  });

  it('worker client escapes before sending', async () => {
    const client = new AgentClient(server.url, agent);
    try {
      const first = await claimTask();
      await client.finish(first.taskId, {
        worker_id: 'worker-r',
        attempt: first.attempt,
        status: 'failure',
        exit_code: 1,
        reason: RAW,
        duration_ms: 12,
      });
      expect(await auditReason('task_finished', first.taskId)).toBe(ESCAPED);
      expect(escapeWarnings(first.taskId)).toEqual([]);

      const second = await claimTask();
      await client.release(second.taskId, {
        worker_id: 'worker-r',
        attempt: second.attempt,
        reason: RAW,
      });
      expect(await auditReason('task_released', second.taskId)).toBe(ESCAPED);
      expect(escapeWarnings(second.taskId)).toEqual([]);
    } finally {
      client.close();
    }
  });
});
