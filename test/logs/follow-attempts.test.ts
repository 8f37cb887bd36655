/**
 * A followed log whose task starts a new attempt. Another process (the orchestrator that
 * recovers an expired lease) appends the note of why the attempt ended to its file, and a
 * worker claims the next attempt before the follower looks at the file again. Or the note is
 * written only after the next claim, as recovery does when its disk is slow.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { taskLogStore } from '../../src/dispatch/services.js';
import { TaskLogStore } from '../../src/logs/task-log-store.js';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('followed log across attempts', () => {
  let server: TestServer;
  let agent: string;
  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps:
      - run: make
`);
    server = await startTestServer({ SLIPWAY_PIPELINES: pipelines });
    agent = await server.token('agent', 'follow-attempts');
    for (const name of ['worker-a', 'worker-b']) {
      const registered = await post('/api/agent/workers', {
        name,
        hostname: 'host-a',
        executors: ['local'],
        capacity: 1,
      });
      expect(registered.status).toBe(200);
    }
  });

  afterAll(async () => {
    await server?.close();
  });

  it('keeps the end of the earlier attempt', async () => {
    const triggered = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abcdef21' },
    });
    const jobId = triggered.body.job_id as string;
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const taskId = claim.body.tasks[0].task_id as string;
    const lease = { worker_id: 'worker-a', attempt: 1 };
    await post(`/api/agent/tasks/${taskId}/logs`, { ...lease, offset: 0, data: 'first\npartial' });

    const response = await fetch(`${server.url}/api/job/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    while (!received.includes('partial')) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended early; got ${received}`);
      received += decoder.decode(value, { stream: true });
    }

    // Written as another process writes them, so no append event wakes the follower between
    // the note and the next attempt.
    const logs = taskLogStore(server.context);
    const note = '\n[slipway] lease expired on worker-a (attempt 1 of 3); queued again\n';
    fs.appendFileSync(logs.pathFor(jobId, taskId, 1), note);
    const secondFile = logs.pathFor(jobId, taskId, 2);
    fs.writeFileSync(secondFile, 'second\n');
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ attempt: 2, log_path: secondFile })
        .where('id', '=', taskId)
        .execute(),
    );
    await server.context.store.write((trx) =>
      trx.updateTable('tasks').set({ status: 'success' }).where('id', '=', taskId).execute(),
    );

    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      received += decoder.decode(value, { stream: true });
    }
    expect(received).toBe(`first\npartial${note}second\n`);
  });

  // The lost attempt's last line may be the step's output or Slipway's header of the step.
  it.each([
    ['abcdef22', 'first'],
    ['abcdef23', '[slipway] step 1/1: make'],
  ])('keeps the note written after the next claim (%s)', async (commit, last) => {
    const triggered = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    const jobId = triggered.body.job_id as string;
    const claim = await post('/api/agent/workers/worker-a/claim', { max: 1, wait_seconds: 0 });
    const taskId = claim.body.tasks[0].task_id as string;
    await post(`/api/agent/tasks/${taskId}/logs`, {
      worker_id: 'worker-a',
      attempt: 1,
      offset: 0,
      data: `${last}\n`,
    });
    const response = await fetch(`${server.url}/api/job/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    while (!received.includes(last)) {
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
    const slowNote = vi.spyOn(TaskLogStore.prototype, 'note').mockImplementation(async function (
      this: TaskLogStore,
      file: string,
      line: string,
    ) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return note.call(this, file, line);
    });
    let second;
    try {
      const recovery = recoverExpiredLeases(server.context, { actor: 'orchestrator' });
      await new Promise((resolve) => setTimeout(resolve, 50));
      second = await post('/api/agent/workers/worker-b/claim', { max: 1, wait_seconds: 0 });
      await recovery;
    } finally {
      slowNote.mockRestore();
    }
    expect(second.body.tasks).toHaveLength(1);
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

    expect(received.startsWith(`${last}\n[slipway] `), received).toBe(true);
    expect(received).toMatch(/\n\[slipway\] [^\n]*lease[^\n]*\nsecond\n$/);
  });
});
