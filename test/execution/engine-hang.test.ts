/**
 * The docker executor against an engine that stops responding or drops its connections, through
 * a proxy in front of the real engine (test/support/engine-proxy.ts). Neither may hold a task
 * forever, and neither may pass for steps that stopped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DockerExecutor } from '../../src/execution/docker.js';
import { EngineTimeoutError } from '../../src/execution/engine-calls.js';
import { ExecutionError, type ExecutionSpec } from '../../src/execution/executor.js';
import { LABEL_MANAGED, LABEL_TASK } from '../../src/jobs/labels.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { makeTempDir } from '../support/server.js';

const TIMEOUT_MS = 3_000;

describe('docker executor and an engine that fails', () => {
  let docker: Docker;
  let proxy: EngineProxy;
  let executor: DockerExecutor;
  const specs: ExecutionSpec[] = [];

  beforeAll(async () => {
    docker = await requireDocker();
    proxy = await startEngineProxy();
    executor = new DockerExecutor(new Docker({ socketPath: proxy.socketPath }), {
      timeoutMs: TIMEOUT_MS,
    });
  });

  afterEach(async () => {
    proxy.thaw();
    // Straight to the engine: whatever a test left behind goes.
    for (const spec of specs.splice(0)) {
      const left = await docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_TASK}=${spec.taskId}`] },
      });
      for (const info of left) await docker.getContainer(info.Id).remove({ force: true });
    }
  });

  afterAll(async () => {
    await proxy?.close();
  });

  function sleepingSpec(): ExecutionSpec {
    const root = makeTempDir('slipway-engine-hang-');
    const workspace = path.join(root, 'src');
    const scratch = path.join(root, 'scratch');
    fs.mkdirSync(workspace);
    fs.mkdirSync(scratch);
    const taskId = `hang-${randomBytes(4).toString('hex')}.1.0`;
    const spec: ExecutionSpec = {
      taskId,
      jobId: taskId.slice(0, -4),
      attempt: 1,
      steps: [{ name: 'sleep', run: 'echo sleeping; sleep 300' }],
      env: {},
      image: TEST_IMAGE,
      network: 'none',
      user: null,
      resources: { memory: 64 * 1024 * 1024, cpus: undefined, pids: 64 },
      workspace,
      scratch,
      labels: { [LABEL_MANAGED]: 'true', [LABEL_TASK]: taskId },
    };
    specs.push(spec);
    return spec;
  }

  /** Starts the spec's run and waits until its container runs; `done` is the run's outcome. */
  async function runUntilRunning(spec: ExecutionSpec, signal: AbortSignal) {
    let output = '';
    const outcome = executor
      .run(spec, { write: (chunk) => (output += chunk.toString()), note: () => undefined }, signal)
      .then(
        (result) => ({ result, error: undefined }),
        (error: unknown) => ({ result: undefined, error }),
      );
    const deadline = Date.now() + 20_000;
    while (!output.includes('sleeping')) {
      if (Date.now() > deadline) throw new Error(`the step did not start; output: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { done: outcome };
  }

  async function containerState(spec: ExecutionSpec): Promise<string | undefined> {
    const [info] = await docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_TASK}=${spec.taskId}`] },
    });
    return info?.State;
  }

  it('gives up on a hung engine after a stop', async () => {
    const spec = sleepingSpec();
    const controller = new AbortController();
    const { done } = await runUntilRunning(spec, controller.signal);
    proxy.freeze();
    const stoppedAt = Date.now();
    controller.abort('timed_out');
    const { error } = await done;
    const waited = Date.now() - stoppedAt;

    expect(error).toBeInstanceOf(ExecutionError);
    expect((error as ExecutionError).stepMayRun).toBe(true);
    // The step's output can arrive before the engine's response to the start, and on a busy
    // machine the freeze can then hold that response instead of the wait's.
    expect((error as Error).message).toMatch(
      new RegExp(
        '^the Docker engine (did not confirm within 3 s that container ' +
          'slipway-hang-[0-9a-f]{8}\\.1\\.0-a1 stopped after Slipway stopped the task; its steps ' +
          'may still run|did not respond to the request to start the container within 3 s; .*' +
          'the container may have started$)',
      ),
    );
    expect(waited).toBeLessThan(10_000);
    // The kill never reached the engine, so the step runs on.
    expect(await containerState(spec)).toBe('running');

    // The cleanup gives up too, so the worker can tell that nothing removed the container.
    await expect(executor.cleanup(spec)).rejects.toBeInstanceOf(EngineTimeoutError);
    expect(await containerState(spec)).toBe('running');

    proxy.thaw();
    await executor.cleanup(spec);
    expect(await containerState(spec)).toBeUndefined();
  });

  it('ends the run on a broken connection', async () => {
    const spec = sleepingSpec();
    const controller = new AbortController();
    const { done } = await runUntilRunning(spec, controller.signal);
    proxy.dropConnections();
    const { error } = await done;

    expect(error).toBeInstanceOf(ExecutionError);
    expect((error as ExecutionError).stepMayRun).toBe(true);
    expect((error as Error).message).toMatch(
      /^lost the connection to the Docker engine while container slipway-hang-[0-9a-f]{8}\.1\.0-a1 ran \(.+\); its steps may still run/,
    );
    expect(await containerState(spec)).toBe('running');
    await executor.cleanup(spec);
    expect(await containerState(spec)).toBeUndefined();
  });

  it('ends at a cancel during the events request', async () => {
    const spec = sleepingSpec();
    proxy.holdRequests(/^GET \S*\/events\b/);
    const controller = new AbortController();
    const run = executor.run(
      spec,
      { write: () => undefined, note: () => undefined },
      controller.signal,
    );
    const deadline = Date.now() + 20_000;
    while (proxy.heldRequests() === 0) {
      if (Date.now() > deadline) throw new Error('the executor sent no events request');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const cancelledAt = Date.now();
    controller.abort('cancelled');

    expect(await run).toEqual({ exitCode: 130 });
    // Well within the 3 s that the events request would otherwise wait.
    expect(Date.now() - cancelledAt).toBeLessThan(1_500);
    // The container was created but never started.
    expect(await containerState(spec)).toBe('created');
    await executor.cleanup(spec);
    expect(await containerState(spec)).toBeUndefined();
  });

  it('bounds a request before the start', async () => {
    const spec = sleepingSpec();
    proxy.freeze();
    const started = Date.now();
    const run = executor.run(
      spec,
      { write: () => undefined, note: () => undefined },
      new AbortController().signal,
    );
    await expect(run).rejects.toThrow(
      'the Docker engine did not respond to the lookup of the image within 3 s; check that the engine runs and responds (docker info)',
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    // The lookup's request is closed too, so that it cannot keep the worker from exiting.
    const deadline = Date.now() + 3_000;
    while (proxy.openConnections() > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(proxy.openConnections()).toBe(0);
  });
});
