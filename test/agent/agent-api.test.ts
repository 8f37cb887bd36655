import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { writePipelineFile } from '../support/execution.js';

describe('agent API', () => {
  let server: TestServer;
  let agent: string;
  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    env: { MODE: test }
    secrets: [API_KEY]
    matrix:
      python_version: { from: python_versions, default: ['3.12'] }
    image: python:\${{ matrix.python_version }}-slim
    steps:
      - name: test
        run: pytest
    timeout: 5m
`);
    server = await startTestServer({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_LOG_MAX_BYTES: '4096',
      SLIPWAY_LEASE_SECONDS: '30',
    });
    agent = await server.token('agent', 'agent-test');
    const registered = await post('/api/agent/workers', {
      name: 'worker-a',
      hostname: 'host-a',
      executors: ['local'],
      capacity: 4,
    });
    expect(registered.status).toBe(200);
    await post('/api/agent/workers', {
      name: 'worker-b',
      hostname: 'host-b',
      executors: ['local'],
      capacity: 4,
    });
  });

  afterAll(async () => {
    await server?.close();
  });

  const trigger = async (body: Record<string, unknown>) => {
    const answer = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body,
    });
    expect(answer.status).toBe(201);
    return answer.body.job_id as string;
  };

  it('rejects a claim from an unregistered worker', async () => {
    const answer = await post('/api/agent/workers/nobody/claim', { max: 1, wait_seconds: 0 });
    expect(answer.status).toBe(404);
    expect(answer.body.code).toBe('worker_not_found');
  });

  it('rejects a claim for an unregistered executor', async () => {
    const before = await countRows(server.context.store.db);
    const answer = await post('/api/agent/workers/worker-a/claim', {
      max: 1,
      wait_seconds: 0,
      executors: ['docker'],
    });
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      code: 'validation_failed',
      field: 'executors',
      rule: 'registered',
    });
    expect(answer.body.error).toBe(
      'executor docker is not one that worker worker-a registered (local); register it again to add executors',
    );
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('claims nothing for an empty executor list', async () => {
    const job = await trigger({ commit: 'abc1234' });
    const empty = await post('/api/agent/workers/worker-a/claim', {
      max: 1,
      wait_seconds: 0,
      executors: [],
    });
    expect(empty.status).toBe(200);
    expect(empty.body.tasks).toEqual([]);
    const listed = await post('/api/agent/workers/worker-a/claim', {
      max: 4,
      wait_seconds: 0,
      executors: ['local'],
    });
    expect(listed.status).toBe(200);
    expect(listed.body.tasks.map((task: { job: { id: string } }) => task.job.id)).toContain(job);
  });

  it('rejects a read token on agent routes', async () => {
    const reader = await server.token('read');
    const answer = await server.request('POST', '/api/agent/workers/worker-a/claim', {
      token: reader,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(answer.status).toBe(403);
  });

  it('records killed leftover steps', async () => {
    const report = {
      killed: [{ pid: 4242, task_id: 'ci-0123abcd.1.0' }],
      failed: [{ pid: 4343, task_id: null, code: 'EPERM' }],
    };
    const answer = await post('/api/agent/workers/worker-a/leftovers', report);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({ worker_id: 'worker-a', recorded: 2 });
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .select(['actor', 'details'])
      .where('action', '=', 'leftover_steps_stopped')
      .execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.actor).toBe('agent-test');
    expect(JSON.parse(rows[0]!.details)).toEqual({ worker_id: 'worker-a', ...report });

    const invalid = await post('/api/agent/workers/worker-a/leftovers', {
      killed: [{ pid: 0, task_id: null }],
      failed: [],
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body.field).toBe('killed.0.pid');
    const unknown = await post('/api/agent/workers/nobody/leftovers', { killed: [], failed: [] });
    expect(unknown.status).toBe(404);
  });

  it('returns everything a worker needs to run the task', async () => {
    const jobId = await trigger({ commit: 'abcdef12', branch: 'main', python_versions: ['3.11'] });
    const answer = await post('/api/agent/workers/worker-a/claim', { max: 4, wait_seconds: 0 });
    expect(answer.status).toBe(200);
    expect(answer.body.tasks).toHaveLength(1);
    const task = answer.body.tasks[0];
    expect(task.job).toMatchObject({ id: jobId, type: 'ci', commit: 'abcdef12', branch: 'main' });
    expect(task.attempt).toBe(1);
    expect(task.image).toBe('python:3.11-slim');
    expect(task.steps).toEqual([{ name: 'test', run: 'pytest' }]);
    expect(task.env).toMatchObject({
      MODE: 'test',
      PYTHON_VERSION: '3.11',
      SLIPWAY_COMMIT: 'abcdef12',
      SLIPWAY_BRANCH: 'main',
      SLIPWAY_JOB_ID: jobId,
    });
    expect(task.secrets).toEqual([{ name: 'API_KEY', fromEnv: 'API_KEY' }]);
    expect(task.timeout_ms).toBe(300_000);
    expect(Date.parse(task.lease_expires_at)).toBeGreaterThan(Date.now());
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('running');
    expect(job.body.tasks[0]).toMatchObject({ worker_id: 'worker-a', attempt: 1 });
    const report = {
      worker_id: 'worker-a',
      attempt: 1,
      status: 'success',
      exit_code: 0,
      duration_ms: 10,
    };
    const finished = await post(`/api/agent/tasks/${task.task_id}/finish`, report);
    expect(finished.status).toBe(200);

    // A worker whose first response was lost sends the same report again.
    const repeated = await post(`/api/agent/tasks/${task.task_id}/finish`, report);
    expect(repeated.status).toBe(200);
    expect(repeated.body).toEqual(finished.body);
    const other = await post(`/api/agent/tasks/${task.task_id}/finish`, {
      ...report,
      status: 'failure',
      exit_code: 1,
    });
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('lease_lost');
    const finishedRows = await server.context.store.db
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'task_finished')
      .where('task_id', '=', task.task_id)
      .execute();
    expect(finishedRows).toHaveLength(1);
  });

  it('answers a waiting claim within milliseconds of a trigger', async () => {
    const waiting = post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 10 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const triggered = Date.now();
    const jobId = await trigger({ commit: 'abcdef13' });
    const answer = await waiting;
    const latency = Date.now() - triggered;
    expect(answer.body.tasks).toHaveLength(1);
    expect(answer.body.tasks[0].job.id).toBe(jobId);
    // Generous for a loaded CI machine; the benchmark measures the real figure.
    expect(latency).toBeLessThan(1_000);
  });

  it('answers an idle claim with no tasks after the wait', async () => {
    const started = Date.now();
    const answer = await post('/api/agent/workers/worker-b/claim', { max: 1, wait_seconds: 0.3 });
    expect(answer.status).toBe(200);
    expect(answer.body.tasks).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('fences heartbeats, logs and finish by worker and attempt', async () => {
    await trigger({ commit: 'abcdef14' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const path = `/api/agent/tasks/${task.task_id}`;

    const wrongAttempt = await post(`${path}/heartbeat`, { worker_id: 'worker-a', attempt: 2 });
    expect(wrongAttempt.status).toBe(409);
    expect(wrongAttempt.body.code).toBe('lease_lost');
    const wrongWorker = await post(`${path}/logs`, {
      worker_id: 'worker-b',
      attempt: 1,
      offset: 0,
      data: 'x',
    });
    expect(wrongWorker.status).toBe(409);

    const beat = await post(`${path}/heartbeat`, { worker_id: 'worker-a', attempt: 1 });
    expect(beat.status).toBe(200);
    expect(beat.body.cancel_requested).toBe(false);

    const finish = await post(`${path}/finish`, {
      worker_id: 'worker-a',
      attempt: 1,
      status: 'failure',
      exit_code: 1,
      reason: 'step "test" exited with code 1',
      duration_ms: 1234,
    });
    expect(finish.status).toBe(200);
    expect(finish.body.status).toBe('failure');
    const again = await post(`${path}/finish`, {
      worker_id: 'worker-a',
      attempt: 1,
      status: 'success',
      duration_ms: 1,
    });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('lease_lost');
  });

  it('rejects numbers beyond the safe range', async () => {
    await trigger({ commit: 'abcdef15' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    /** Posts JSON text as written, because JSON.stringify would change 1e308 and lose digits. */
    const postText = async (path: string, token: string, text: string) => {
      const response = await fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: text,
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };

    const base = '"worker_id":"worker-a","status":"success"';
    for (const [field, text] of [
      ['exit_code', `{${base},"attempt":1,"duration_ms":10,"exit_code":99999999999999999999}`],
      ['duration_ms', `{${base},"attempt":1,"duration_ms":1e308}`],
      ['attempt', `{${base},"attempt":1e300,"duration_ms":10}`],
    ] as const) {
      const answer = await postText(`/api/agent/tasks/${task.task_id}/finish`, agent, text);
      expect(answer.status, text).toBe(400);
      expect(answer.body.field, text).toBe(field);
      expect(answer.body.rule, text).toBe('maximum');
    }
    const row = await server.context.store.db
      .selectFrom('tasks')
      .select('status')
      .where('id', '=', task.task_id)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('running');

    const triggered = await postText(
      '/api/trigger/ci',
      server.adminToken,
      '{"commit":"abcdef16","github_run_id":"12","github_run_attempt":100000000000000000000}',
    );
    expect(triggered.status).toBe(400);
    expect(triggered.body.field).toBe('github_run_attempt');
  });

  it('treats an empty finish reason as none', async () => {
    const jobId = await trigger({ commit: 'abcdef17' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const finish = await post(`/api/agent/tasks/${task.task_id}/finish`, {
      worker_id: 'worker-a',
      attempt: 1,
      status: 'failure',
      exit_code: 2,
      reason: '',
      duration_ms: 5,
    });
    expect(finish.status).toBe(200);
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.reason).not.toMatch(/: $/);
    expect(job.body.reason).toContain('exited with code 2');
  });

  it('rejects an exit_code that contradicts status', async () => {
    await trigger({ commit: 'abcdef18' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const finish = `/api/agent/tasks/${task.task_id}/finish`;
    const lease = { worker_id: 'worker-a', attempt: 1, duration_ms: 5 };
    const before = await countRows(server.context.store.db);
    for (const [status, exitCode] of [
      ['success', 1],
      ['success', -1],
      ['failure', 0],
    ] as const) {
      const answer = await post(finish, { ...lease, status, exit_code: exitCode });
      const label = `${status} with exit_code ${exitCode}`;
      expect(answer.status, label).toBe(400);
      expect(answer.body.code, label).toBe('validation_failed');
      expect(answer.body.field, label).toBe('exit_code');
      expect(answer.body.rule, label).toBe('matches_status');
      expect(answer.body.error, label).toContain(`exit_code ${exitCode}`);
    }
    expect(await countRows(server.context.store.db)).toEqual(before);
    const row = await server.context.store.db
      .selectFrom('tasks')
      .select(['status', 'exit_code'])
      .where('id', '=', task.task_id)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('running');
    expect(row.exit_code).toBeNull();
  });

  it('accepts every report the worker sends', async () => {
    // The reports that src/worker/task-run.ts sends for each outcome, and a success that
    // leaves the exit code out.
    const reports = [
      { status: 'success', exit_code: 0 },
      { status: 'success' },
      { status: 'failure', exit_code: 2 },
      { status: 'error', exit_code: null },
      { status: 'timed_out', exit_code: null },
      { status: 'cancelled', exit_code: null },
    ];
    const versions = reports.map((_, index) => `3.${index}`);
    const jobId = await trigger({ commit: 'abcdef19', python_versions: versions });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 16, wait_seconds: 0 });
    const tasks = (claim.body.tasks as Array<{ task_id: string; job: { id: string } }>).filter(
      (task) => task.job.id === jobId,
    );
    expect(tasks).toHaveLength(reports.length);
    for (const [index, report] of reports.entries()) {
      const answer = await post(`/api/agent/tasks/${tasks[index]!.task_id}/finish`, {
        worker_id: 'worker-a',
        attempt: 1,
        duration_ms: 5,
        ...report,
      });
      expect(answer.status, JSON.stringify(report)).toBe(200);
      expect(answer.body.status, JSON.stringify(report)).toBe(report.status);
    }
  });

  it('stores a retried log upload once and caps the log', async () => {
    const jobId = await trigger({ commit: 'abcdef15' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const lease = { worker_id: 'worker-a', attempt: 1 };
    const logs = `/api/agent/tasks/${task.task_id}/logs`;

    expect((await post(logs, { ...lease, offset: 0, data: 'first\n' })).body.received).toBe(6);
    const repeat = await post(logs, { ...lease, offset: 0, data: 'first\n' });
    expect(repeat.body).toMatchObject({ received: 6, accepted: 0 });
    const overlap = await post(logs, { ...lease, offset: 3, data: 'st\nsecond\n' });
    expect(overlap.body).toMatchObject({ received: 13, accepted: 7 });
    const gap = await post(logs, { ...lease, offset: 100, data: 'lost' });
    expect(gap.status).toBe(400);
    expect(gap.body.field).toBe('offset');

    const text = await server.request('GET', `/api/job/${jobId}/logs`, {
      token: server.adminToken,
    });
    expect(text.text).toBe('first\nsecond\n');

    const big = 'y'.repeat(5000);
    const capped = await post(logs, { ...lease, offset: 13, data: big });
    expect(capped.body.truncated).toBe(true);
    const after = await post(logs, { ...lease, offset: 5013, data: 'more' });
    expect(after.status).toBe(200);
    const row = await server.context.store.db
      .selectFrom('tasks')
      .select('log_path')
      .where('id', '=', task.task_id)
      .executeTakeFirstOrThrow();
    const stored = fs.readFileSync(row.log_path!, 'utf8');
    expect(stored.startsWith('first\nsecond\nyyy')).toBe(true);
    expect(stored).toContain('[slipway] log cut at 4096 bytes');
    expect(stored).not.toContain('more');
    expect(Buffer.byteLength(stored)).toBeLessThan(4096 + 200);
  });

  it('ends a cut log with a hand-back', async () => {
    const jobId = await trigger({ commit: 'abcdef16' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    expect(task.job.id).toBe(jobId);
    const lease = { worker_id: 'worker-a', attempt: task.attempt };
    const logs = `/api/agent/tasks/${task.task_id}/logs`;
    const capped = await post(logs, { ...lease, offset: 0, data: 'z'.repeat(5000) });
    expect(capped.body.truncated).toBe(true);

    const reason = 'worker worker-a stopped before the task ended';
    const released = await post(`/api/agent/tasks/${task.task_id}/release`, { ...lease, reason });
    expect(released.status, released.text).toBe(200);
    const query = `task=${task.task_id}&attempt=${task.attempt}`;
    const text = await server.request('GET', `/api/job/${jobId}/logs?${query}`, {
      token: server.adminToken,
    });
    expect(text.text).toContain('[slipway] log cut at 4096 bytes');
    expect(text.text.endsWith(`[slipway] ${reason}; the task is queued again\n`)).toBe(true);
    // The queued task would go to the claims of the tests that follow.
    const cancelled = await server.request('POST', `/api/job/${jobId}/cancel`, {
      token: server.adminToken,
    });
    expect(cancelled.status, cancelled.text).toBe(202);
  });

  it('keeps stored logs valid UTF-8', async () => {
    await trigger({ commit: 'abcdef1b' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const lease = { worker_id: 'worker-a', attempt: 1 };
    const logs = `/api/agent/tasks/${task.task_id}/logs`;

    // 'é' is two bytes. Claiming that 'ééb' starts at offset 2, the second byte of the first
    // 'é', puts the upload's first new byte, at 3, inside a character.
    expect((await post(logs, { ...lease, offset: 0, data: 'aé' })).body.received).toBe(3);
    const inside = await post(logs, { ...lease, offset: 2, data: 'ééb' });
    expect(inside.status).toBe(400);
    expect(inside.body).toMatchObject({ field: 'offset', rule: 'characterBoundary', received: 3 });

    // 4,093 bytes so far leave room for 3 more, and byte 3 of 'éé' is inside the second 'é'.
    const filler = 'x'.repeat(4090);
    expect((await post(logs, { ...lease, offset: 3, data: filler })).body.received).toBe(4093);
    const capped = await post(logs, { ...lease, offset: 4093, data: 'éé and more' });
    expect(capped.body.truncated).toBe(true);

    const row = await server.context.store.db
      .selectFrom('tasks')
      .select('log_path')
      .where('id', '=', task.task_id)
      .executeTakeFirstOrThrow();
    const stored = fs.readFileSync(row.log_path!);
    expect(new TextDecoder('utf-8', { fatal: true }).decode(stored)).toMatch(
      /^aéx{4090}é\n\[slipway\] log cut at 4096 bytes/,
    );
  });

  it('streams a followed log until the task ends', async () => {
    const jobId = await trigger({ commit: 'abcdef16' });
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const task = claim.body.tasks[0];
    const lease = { worker_id: 'worker-a', attempt: 1 };
    const response = await fetch(`${server.url}/api/job/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    const readUntil = async (needle: string) => {
      while (!received.includes(needle)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended before "${needle}"; got ${received}`);
        received += decoder.decode(value, { stream: true });
      }
    };
    await post(`/api/agent/tasks/${task.task_id}/logs`, { ...lease, offset: 0, data: 'one\n' });
    await readUntil('one\n');
    await post(`/api/agent/tasks/${task.task_id}/logs`, { ...lease, offset: 4, data: 'two\n' });
    await readUntil('two\n');
    await post(`/api/agent/tasks/${task.task_id}/finish`, {
      ...lease,
      status: 'success',
      exit_code: 0,
      duration_ms: 5,
    });
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
    expect(received).toBe('one\ntwo\n');
  });

  it('re-queues an error while retries remain', async () => {
    const pipelines = server.context.pipelines.pipelines;
    // Without the matrix, ci's image template would render as python:-slim.
    pipelines.retrying = {
      ...pipelines.ci!,
      type: 'retrying',
      retries: 1,
      matrix: [],
      image: 'python:3.12-slim',
    };
    const answer = await server.request('POST', '/api/trigger/retrying', {
      token: server.adminToken,
      body: { commit: 'abcdef17' },
    });
    const jobId = answer.body.job_id;
    const lease = { worker_id: 'worker-a' };
    const first = (await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 }))
      .body.tasks[0];
    // The worker waits for a left container's removal only while a retry remains.
    expect(first.retry_on_error).toBe(true);
    const report = { status: 'error', reason: 'engine restarted', duration_ms: 1 };
    const retried = await post(`/api/agent/tasks/${first.task_id}/finish`, {
      ...lease,
      attempt: first.attempt,
      ...report,
    });
    expect(retried.body).toMatchObject({ status: 'queued', retried: true });
    const second = (await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 }))
      .body.tasks[0];
    expect(second.task_id).toBe(first.task_id);
    expect(second.attempt).toBe(2);
    expect(second.retry_on_error).toBe(false);
    // The task's times are those of its second attempt: it started after it was queued again.
    const running = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    const task = running.body.tasks[0];
    expect(Date.parse(task.started_at)).toBeGreaterThanOrEqual(Date.parse(task.queued_at));
    const final = await post(`/api/agent/tasks/${second.task_id}/finish`, {
      ...lease,
      attempt: 2,
      ...report,
    });
    expect(final.body).toMatchObject({ status: 'error', retried: false });
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('error');
  });
});
