/**
 * A follower of a task whose lease expired, when the note that ends the lost attempt's log is
 * written after the next attempt has started, as when the orchestrator runs in another process
 * or its disk is slow.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TaskLogStore } from '../../src/logs/task-log-store.js';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('followed log of a lost attempt', () => {
  let server: TestServer;
  let agent: string;
  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });

  beforeAll(async () => {
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps:
      - run: make
`),
    });
    agent = await server.token('agent', 'lost-attempt');
    for (const name of ['worker-a', 'worker-b']) {
      await post('/api/agent/workers', { name, hostname: 'h', executors: ['local'], capacity: 1 });
    }
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await server?.close();
  });

  it('keeps the note written after the next claim', async () => {
    const triggered = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abcdef21' },
    });
    const jobId = triggered.body.job_id as string;
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const taskId = claim.body.tasks[0].task_id as string;
    await post(`/api/agent/tasks/${taskId}/logs`, {
      worker_id: 'worker-a',
      attempt: 1,
      offset: 0,
      data: 'first\n',
    });
    const response = await fetch(`${server.url}/api/job/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    while (!received.includes('first')) {
      received += decoder.decode((await reader.read()).value, { stream: true });
    }

    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ lease_expires_at: '2000-01-01T00:00:00.000Z' })
        .where('id', '=', taskId)
        .execute(),
    );
    // A slow disk: the note takes 300 ms to write, and a second worker claims the task meanwhile.
    const note = TaskLogStore.prototype.note;
    vi.spyOn(TaskLogStore.prototype, 'note').mockImplementation(async function (
      this: TaskLogStore,
      file: string,
      line: string,
    ) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return note.call(this, file, line);
    });
    const recovery = recoverExpiredLeases(server.context, { actor: 'orchestrator' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = await post('/api/agent/workers/worker-b/claim', { max: 1, wait_seconds: 0 });
    expect(second.body.tasks).toHaveLength(1);
    await recovery;
    vi.restoreAllMocks();
    await post(`/api/agent/tasks/${taskId}/logs`, {
      worker_id: 'worker-b',
      attempt: 2,
      offset: 0,
      data: 'second\n',
    });
    await post(`/api/agent/tasks/${taskId}/finish`, {
      worker_id: 'worker-b',
      attempt: 2,
      status: 'success',
      exit_code: 0,
      duration_ms: 1,
    });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      received += decoder.decode(value, { stream: true });
    }

    expect(received).toMatch(/^first\n\[slipway\] [^\n]*lease[^\n]*\nsecond\n$/);
  });
});
