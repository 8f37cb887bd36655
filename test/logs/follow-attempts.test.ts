/**
 * A followed log whose task starts a new attempt. Another process (the orchestrator that
 * recovers an expired lease) appends the note of why the attempt ended to its file, and a
 * worker claims the next attempt before the follower looks at the file again.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { taskLogStore } from '../../src/dispatch/services.js';
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
    const registered = await post('/api/agent/workers', {
      name: 'worker-a',
      hostname: 'host-a',
      executors: ['local'],
      capacity: 1,
    });
    expect(registered.status).toBe(200);
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
});
