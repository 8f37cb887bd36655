/**
 * Dispatch benchmark. Starts the API and one in-process worker (local executor, over HTTP as
 * in `slipway serve`) on a fresh data directory, then measures:
 *
 *   1. sequential: JOBS jobs of one no-op step, triggered one after another: each trigger is
 *      sent once the previous job finished, so a worker is always waiting and the latency
 *      is the dispatch path alone. Trigger-to-running latency is measured from the request
 *      being sent until the claim that moved the task to `running` committed;
 *   2. burst: BURST concurrent triggers, the same figures;
 *   3. docker: DOCKER_RUNS tasks of `true` in slipway-test-busybox:latest through the docker
 *      executor, against `docker run --rm` of the same image and command.
 *
 * The worker runs either as its own process (`slipway worker`, as in the compose stack) or
 * inside the API's process (as in `slipway serve`); `--worker both` measures both.
 *
 * Usage: npx tsx bench/dispatch/run.ts [--jobs 1000] [--burst 200] [--docker-runs 20]
 *        [--capacity 16] [--worker process|in-process|both]
 */
import { execFileSync, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createContext, type AppContext } from '../../src/app/context.js';
import { startApi } from '../../src/app/roles.js';
import { loadConfig } from '../../src/config/env.js';
import { createWorkspace, removeWorkspace } from '../../src/execution/checkout.js';
import { DockerExecutor, dockerClient } from '../../src/execution/docker.js';
import { createLogger } from '../../src/log.js';
import { openStore } from '../../src/store/database.js';
import { createToken } from '../../src/store/tokens.js';
import { startWorker } from '../../src/worker/role.js';

const TEST_IMAGE = 'slipway-test-busybox:latest';
const { values: options } = parseArgs({
  options: {
    jobs: { type: 'string', default: '1000' },
    burst: { type: 'string', default: '200' },
    'docker-runs': { type: 'string', default: '20' },
    capacity: { type: 'string', default: '16' },
    worker: { type: 'string', default: 'both' },
  },
});
const JOBS = Number(options.jobs);
const BURST = Number(options.burst);
const DOCKER_RUNS = Number(options['docker-runs']);
const CAPACITY = options.capacity!;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)]!;
}

function summary(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const f = (n: number) => n.toFixed(2);
  return `p50 ${f(percentile(sorted, 50))} ms, p99 ${f(percentile(sorted, 99))} ms, max ${f(sorted.at(-1) ?? NaN)} ms`;
}

interface Tracker {
  /** Emits `finished` with the job id. */
  events: EventEmitter;
  sentAt: Map<string, number>;
  answeredAt: Map<string, number>;
  runningAt: Map<string, number>;
  finishedAt: Map<string, number>;
}

function track(context: AppContext): Tracker {
  const tracker: Tracker = {
    events: new EventEmitter(),
    sentAt: new Map(),
    answeredAt: new Map(),
    runningAt: new Map(),
    finishedAt: new Map(),
  };
  context.events.on('task-status', ({ jobId, to }) => {
    if (to === 'running' && !tracker.runningAt.has(jobId)) {
      tracker.runningAt.set(jobId, performance.now());
    }
  });
  context.events.on('job-status', ({ jobId, to }) => {
    if (['success', 'failure', 'error', 'timed_out', 'cancelled'].includes(to)) {
      tracker.finishedAt.set(jobId, performance.now());
      tracker.events.emit('finished', jobId);
    }
  });
  return tracker;
}

async function trigger(url: string, token: string, tracker: Tracker, commit: string) {
  const sent = performance.now();
  const response = await fetch(`${url}/api/trigger/noop`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ commit, branch: 'main' }),
  });
  const body = (await response.json()) as { job_id: string };
  if (response.status !== 201) throw new Error(`trigger returned ${response.status}`);
  tracker.sentAt.set(body.job_id, sent);
  tracker.answeredAt.set(body.job_id, performance.now());
  return body.job_id;
}

async function waitFinished(tracker: Tracker, ids: string[]): Promise<void> {
  const pending = new Set(ids.filter((id) => !tracker.finishedAt.has(id)));
  if (pending.size === 0) return;
  await new Promise<void>((resolve) => {
    const onFinished = (id: string) => {
      pending.delete(id);
      if (pending.size > 0) return;
      tracker.events.off('finished', onFinished);
      resolve();
    };
    tracker.events.on('finished', onFinished);
  });
}

function report(name: string, tracker: Tracker, ids: string[], startedAt: number) {
  const latencies = ids.map((id) => tracker.runningAt.get(id)! - tracker.sentAt.get(id)!);
  const lastFinish = Math.max(...ids.map((id) => tracker.finishedAt.get(id)!));
  const seconds = (lastFinish - startedAt) / 1000;
  console.log(`  ${name}: ${ids.length} jobs`);
  const answered = ids.map((id) => tracker.answeredAt.get(id)! - tracker.sentAt.get(id)!);
  console.log(`    trigger-to-running: ${summary(latencies)}`);
  console.log(`      of which the trigger request (committed job): ${summary(answered)}`);
  console.log(
    `    finished: ${(ids.length / seconds).toFixed(1)} jobs/s (${seconds.toFixed(2)} s)`,
  );
}

/** Starts `slipway worker` as a child process that reaches the API over HTTP. */
async function startWorkerProcess(apiUrl: string, token: string, dataDir: string) {
  const cli = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'worker'], {
    env: {
      ...process.env,
      SLIPWAY_API_URL: apiUrl,
      SLIPWAY_AGENT_TOKEN: token,
      SLIPWAY_DATA_DIR: path.join(dataDir, 'worker'),
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_CAPACITY: CAPACITY,
      SLIPWAY_WORKER_NAME: 'bench-worker',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return {
    name: 'worker',
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function dispatchBenchmark(mode: 'process' | 'in-process'): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-'));
  const pipelines = path.join(dataDir, 'slipway.yml');
  fs.writeFileSync(
    pipelines,
    'pipelines:\n  noop:\n    executor: local\n    steps:\n      - name: noop\n        run: "true"\n',
  );
  const config = loadConfig({
    SLIPWAY_DATA_DIR: dataDir,
    SLIPWAY_PIPELINES: pipelines,
    API_PORT: '0',
    LOG_LEVEL: 'silent',
    SLIPWAY_EXECUTOR: 'local',
    SLIPWAY_WORKER_CAPACITY: CAPACITY,
    API_RATE_LIMIT: '0',
    SLIPWAY_ADMIN_TOKEN: 'slw_bench-admin-token-000000000000000000',
  });
  const context = await createContext(config, { logger: createLogger('silent') });
  const api = await startApi(context);
  const token = config.api.adminToken!;
  const tracker = track(context);
  let worker: { stop(): Promise<void> };
  if (mode === 'in-process') {
    worker = await startWorker(context);
  } else {
    const agent = await context.store.write((trx) => createToken(trx, 'bench-agent', 'agent'));
    worker = await startWorkerProcess(api.url, agent.token, dataDir);
  }
  console.log(`worker ${mode === 'process' ? 'in its own process' : 'in the API process'}:`);
  const commit = 'abcdef1234567';

  // Warm-up: JIT, connections and the first SQLite pages.
  const warm: string[] = [];
  for (let i = 0; i < 20; i += 1) warm.push(await trigger(api.url, token, tracker, commit));
  await waitFinished(tracker, warm);

  let started = performance.now();
  const sequential: string[] = [];
  for (let i = 0; i < JOBS; i += 1) {
    const id = await trigger(api.url, token, tracker, commit);
    sequential.push(id);
    await waitFinished(tracker, [id]);
  }
  await waitFinished(tracker, sequential);
  report('sequential', tracker, sequential, started);

  started = performance.now();
  const burst = await Promise.all(
    Array.from({ length: BURST }, () => trigger(api.url, token, tracker, commit)),
  );
  await waitFinished(tracker, burst);
  report(`burst of ${BURST} concurrent triggers`, tracker, burst, started);

  await worker.stop();
  await api.stop();
  await context.store.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

async function dockerBenchmark(): Promise<void> {
  const docker = dockerClient(process.env.DOCKER_HOST);
  const executor = new DockerExecutor(docker);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-docker-'));
  const sink = { write: () => undefined, note: () => undefined };
  const plain: number[] = [];
  const slipway: number[] = [];
  for (let i = 0; i < DOCKER_RUNS; i += 1) {
    // Alternate, so drift in the engine's speed affects both sides alike.
    let started = performance.now();
    execFileSync('docker', ['run', '--rm', TEST_IMAGE, 'true'], { stdio: 'ignore' });
    plain.push(performance.now() - started);

    started = performance.now();
    const workspace = await createWorkspace(root, `bench-${i}.1.0`);
    fs.mkdirSync(workspace.src);
    const spec = {
      taskId: `bench-${i}.1.0`,
      jobId: `bench-${i}`,
      attempt: 1,
      steps: [{ name: 'noop', run: 'true' }],
      env: {},
      image: TEST_IMAGE,
      network: null,
      user: null,
      resources: { memory: undefined, cpus: undefined, pids: undefined },
      workspace: workspace.src,
      scratch: workspace.scratch,
      labels: {
        'slipway.managed': 'true',
        'slipway.instance': 'bench',
        'slipway.task': `bench-${i}.1.0`,
      },
    };
    const result = await executor.run(spec, sink, new AbortController().signal);
    await executor.cleanup(spec);
    await removeWorkspace(workspace);
    slipway.push(performance.now() - started);
    if (result.exitCode !== 0)
      throw new Error(`docker executor run ${i} exited ${result.exitCode}`);
  }
  fs.rmSync(root, { recursive: true, force: true });
  const median = (values: number[]) =>
    percentile(
      [...values].sort((a, b) => a - b),
      50,
    );
  console.log(`docker: ${DOCKER_RUNS} runs of \`true\` in ${TEST_IMAGE}`);
  console.log(`  docker run --rm:   ${summary(plain)}`);
  console.log(
    `  docker executor:   ${summary(slipway)} (create, attach, start, wait, remove, workspace)`,
  );
  console.log(`  ratio of medians:  ${(median(slipway) / median(plain)).toFixed(2)}x`);
}

/** Times durable commits of one small row, the floor under every trigger and every claim. */
async function commitBenchmark(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-commit-'));
  const store = await openStore(path.join(dir, 'commit.db'));
  const times: number[] = [];
  for (let i = 0; i < 200; i += 1) {
    const started = performance.now();
    await store.write((trx) =>
      trx
        .insertInto('state_variables')
        .values({ name: `V${i}`, value: 'x', updated_at: 'x', synced_at: null, synced_value: null })
        .execute(),
    );
    times.push(performance.now() - started);
  }
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(
    `one durable SQLite commit (store.write, WAL fsynced), 200 in a row: ${summary(times)}`,
  );
}

console.log(
  `machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), node ${process.version}`,
);
await commitBenchmark();
const modes = options.worker === 'both' ? (['process', 'in-process'] as const) : [options.worker];
for (const mode of modes) {
  if (mode !== 'process' && mode !== 'in-process')
    throw new Error(`--worker ${mode}: expected process, in-process or both`);
  await dispatchBenchmark(mode);
}
if (DOCKER_RUNS > 0) await dockerBenchmark();
