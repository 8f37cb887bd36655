/**
 * The workspace sweep and a task that ended while its steps may still run. The worker reported
 * `step_stopped: false` (its Docker engine hung), so the task keeps its lease, and its steps,
 * which may still run, use the workspace. The sweep must leave the workspace until the worker
 * reports that the steps stopped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeOrphanWorkspaces } from '../../src/orchestrator/orphans.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const audit = { actor: 'orchestrator' };

describe('workspace sweep and a kept lease', () => {
  let server: TestServer;
  let agentToken: string;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  deploy:
    executor: local
    side_effects: true
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: 'true'
`);
    server = await startTestServer({ SLIPWAY_PIPELINES: pipelines, SLIPWAY_LEASE_SECONDS: '30' });
    agentToken = await server.token('agent', 'agent-sweep');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agentToken,
      body: { name: 'worker-a', hostname: 'host', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBe(200);
  });

  afterAll(async () => {
    await server?.close();
  });

  function finish(taskId: string, attempt: number, stepStopped: boolean) {
    return server.request('POST', `/api/agent/tasks/${taskId}/finish`, {
      token: agentToken,
      body: {
        worker_id: 'worker-a',
        attempt,
        status: 'timed_out',
        reason: 'timed out after 3s; the Docker engine did not confirm the stop',
        duration_ms: 3000,
        step_stopped: stepStopped,
      },
    });
  }

  it('keeps the workspace of steps that may run', async () => {
    const created = await server.request('POST', '/api/trigger/deploy', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'main' },
    });
    expect(created.status, created.text).toBe(201);
    const claimed = await server.request('POST', '/api/agent/workers/worker-a/claim', {
      token: agentToken,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(claimed.status, claimed.text).toBe(200);
    const { task_id: taskId, attempt } = claimed.body.tasks[0] as {
      task_id: string;
      attempt: number;
    };
    const workspace = path.join(server.context.config.workspacePath, taskId);
    fs.mkdirSync(path.join(workspace, 'src'), { recursive: true });

    const ended = await finish(taskId, attempt, false);
    expect(ended.status, ended.text).toBe(200);
    expect(ended.body.status).toBe('timed_out');

    // Later than ORPHAN_GRACE_MS, so the workspace counts as old enough.
    const later = Date.now() + 120_000;
    expect(await removeOrphanWorkspaces(server.context, audit, later)).toBe(0);
    expect(fs.existsSync(workspace)).toBe(true);

    const stopped = await finish(taskId, attempt, true);
    expect(stopped.status, stopped.text).toBe(200);
    expect(await removeOrphanWorkspaces(server.context, audit, later)).toBe(1);
    expect(fs.existsSync(workspace)).toBe(false);
  });
});
