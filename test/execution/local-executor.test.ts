import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  parseStepCgroupName,
  stepCgroupName,
  stepCgroupParent,
} from '../../src/execution/cgroup.js';
import { ExecutionError, type ExecutionSpec } from '../../src/execution/executor.js';
import {
  installId,
  LocalExecutor,
  PID_NAMESPACE,
  processOwner,
  PROCESS_OWNER_VARIABLE,
} from '../../src/execution/local.js';
import {
  makeRepository,
  processesWith,
  startHarness,
  writePipelineFile,
  type ExecutionHarness,
} from '../support/execution.js';
import { makeTempDir } from '../support/server.js';

const MARKER = `slipway-test-marker-${process.pid}`;
/** Variables of the worker's process that a step must not see. */
const SERVER_SECRETS = [
  'SLIPWAY_ADMIN_TOKEN',
  'SLIPWAY_AGENT_TOKEN',
  'SLIPWAY_TOKEN',
  'GITHUB_TOKEN',
  'GITHUB_WEBHOOK_SECRET',
];

describe('local executor through the API', () => {
  let harness: ExecutionHarness;
  let repo: { dir: string; commit: string };

  beforeAll(async () => {
    repo = makeRepository({ 'hello.txt': 'hello from the repository\n' });
    const pipelines = writePipelineFile(`
repository: ${repo.dir}
pipelines:
  ci:
    executor: local
    env: { GREETING: hi }
    secrets: [SLIPWAY_TEST_SECRET]
    matrix:
      flavour: { from: flavours, default: [plain] }
    steps:
      - name: show
        run: cat hello.txt; echo "commit=$SLIPWAY_COMMIT flavour=$FLAVOUR greeting=$GREETING"
      - name: leak
        run: echo "secret is $SLIPWAY_TEST_SECRET"
  broken:
    executor: local
    steps:
      - name: first
        run: echo before
      - name: fails
        run: echo failing; exit 3
      - name: never
        run: echo never-runs
  unsecret:
    executor: local
    secrets: [SLIPWAY_TEST_SECRET_NOT_SET]
    steps:
      - name: never
        run: echo never-runs
  longreason:
    executor: local
    secrets: [{ name: LONG_SECRET, from_file: /nonexistent/${'x'.repeat(2100)} }]
    steps:
      - name: never
        run: echo never-runs
  environment:
    executor: local
    steps:
      - name: names
        run: env | cut -d= -f1
  interleaved:
    executor: local
    steps:
      - name: both
        run: seq 1 20000; echo on-stderr >&2; echo last-on-stdout
  sleeper:
    executor: local
    steps:
      - name: sleep
        run: (sleep 300; echo ${MARKER}-a) & sleep 301 && echo ${MARKER}-b
  slow:
    executor: local
    timeout: 2s
    steps:
      - name: sleep
        run: sleep 302 && echo ${MARKER}-c
  grouped:
    executor: local
    concurrency: { group: branch, cancel_in_progress: true }
    steps:
      - name: sleep
        run: sleep 303 && echo ${MARKER}-d
`);
    process.env.SLIPWAY_TEST_SECRET = 's3cr3t-value-123';
    for (const name of SERVER_SECRETS) process.env[name] = `${name.toLowerCase()}-value-123`;
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_CAPACITY: '4',
    });
  });

  afterAll(async () => {
    await harness?.close();
    for (const name of SERVER_SECRETS) delete process.env[name];
  });

  it('runs a job to success with its logs', async () => {
    const id = await harness.trigger('ci', {
      commit: repo.commit,
      branch: 'main',
      flavours: ['a', 'b'],
    });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    expect(job.tasks).toHaveLength(2);
    const logs = await harness.logs(id, `?task=${job.tasks[1].id}`);
    expect(logs).toContain('hello from the repository');
    expect(logs).toContain(`commit=${repo.commit} flavour=b greeting=hi`);
    expect(logs).toContain('[slipway] step 2/2: leak');
  });

  it('keeps server secrets from steps', async () => {
    const id = await harness.trigger('environment', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    const names = (await harness.logs(id)).split('\n');
    expect(names).toContain('PATH');
    for (const name of SERVER_SECRETS) expect(names).not.toContain(name);
  });

  it('ends a task without its secret as error', async () => {
    const id = await harness.trigger('unsecret', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');
    const logs = await harness.logs(id);
    expect(logs).toContain(`[slipway] unsecret (task ${job.tasks[0].id}, attempt 1) on worker`);
    expect(logs).toContain(
      'secret SLIPWAY_TEST_SECRET_NOT_SET: environment variable SLIPWAY_TEST_SECRET_NOT_SET is not set on this worker',
    );
    expect(logs).not.toContain('never-runs');
  });

  it('reports an error reason over the API limit', async () => {
    // The finish report takes a reason of at most 2000 characters. A longer one was rejected,
    // so the task stayed running until its lease ran out, and its error was lost.
    const id = await harness.trigger('longreason', { commit: repo.commit });
    const job = await harness.waitForJob(id, 20_000);
    expect(job.status).toBe('error');
    const reason = job.tasks[0].reason as string;
    expect(reason.length).toBe(2000);
    expect(reason.startsWith('secret LONG_SECRET: file /nonexistent/xxx')).toBe(true);
    expect(reason.endsWith('…')).toBe(true);
  });

  it('keeps stdout and stderr in order', async () => {
    const id = await harness.trigger('interleaved', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    const lines = (await harness.logs(id)).split('\n');
    const stderrLine = lines.indexOf('on-stderr');
    expect(stderrLine).toBeGreaterThan(lines.indexOf('20000'));
    expect(lines[stderrLine + 1]).toBe('last-on-stdout');
  });

  it('masks secret values in logs', async () => {
    const id = await harness.trigger('ci', { commit: repo.commit });
    await harness.waitForJob(id);
    const logs = await harness.logs(id);
    expect(logs).toContain('secret is ***');
    expect(logs).not.toContain('s3cr3t-value-123');
  });

  it('stops at the first failing step', async () => {
    const id = await harness.trigger('broken', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    expect(job.tasks[0].exit_code).toBe(3);
    expect(job.reason).toContain('step "fails" exited with code 3');
    const logs = await harness.logs(id);
    expect(logs).toContain('failing');
    expect(logs).not.toContain('never-runs');
  });

  it('ends a job for a missing commit as error', async () => {
    const missing = 'deadbeefdeadbeefdeadbeefdeadbeefdeadbeef';
    const id = await harness.trigger('ci', { commit: missing });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');
    expect(job.reason).toContain(`commit ${missing} not found`);
  });

  it('cancels a running job and its grandchildren', async () => {
    const id = await harness.trigger('sleeper', { commit: repo.commit });
    await harness.waitForStatus(id, 'running');
    await waitFor(() => processesWith(`sleep 30`).length >= 2, 5_000);
    const started = Date.now();
    const cancel = await harness.server.request('POST', `/api/job/${id}/cancel`, {
      token: harness.token,
    });
    expect(cancel.status).toBe(202);
    const job = await harness.waitForJob(id, 10_000);
    expect(job.status).toBe('cancelled');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(processesWith(`${MARKER}-a`)).toEqual([]);
    expect(processesWith(`${MARKER}-b`)).toEqual([]);
    const workspace = path.join(harness.server.context.config.workspacePath, job.tasks[0].id);
    expect(fs.existsSync(workspace)).toBe(false);
  });

  it('ends a job that runs too long as timed_out', async () => {
    const id = await harness.trigger('slow', { commit: repo.commit });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('timed_out');
    expect(job.reason).toContain('timed out after 2s');
    expect(processesWith(`${MARKER}-c`)).toEqual([]);
  });

  it('cancels the older job of a concurrency group', async () => {
    const first = await harness.trigger('grouped', { commit: repo.commit, branch: 'feature/x' });
    await harness.waitForStatus(first, 'running');
    const second = await harness.trigger('grouped', { commit: repo.commit, branch: 'feature/x' });
    const older = await harness.waitForJob(first, 10_000);
    expect(older.status).toBe('cancelled');
    expect(older.reason).toContain(`newer job ${second}`);
    await harness.server.request('POST', `/api/job/${second}/cancel`, { token: harness.token });
    const newer = await harness.waitForJob(second, 10_000);
    expect(newer.status).toBe('cancelled');
    expect(processesWith(`${MARKER}-d`)).toEqual([]);
  });
});

describe('local executor and detached processes', () => {
  let harness: ExecutionHarness;
  let repo: { dir: string; commit: string };

  beforeAll(async () => {
    repo = makeRepository({ 'hello.txt': 'hello\n' });
    // Each step waits a moment, so that setsid has run before the step ends.
    harness = await startHarness({
      SLIPWAY_PIPELINES: writePipelineFile(`
repository: ${repo.dir}
pipelines:
  detached:
    executor: local
    steps:
      - name: detach
        run: |
          setsid sh -c 'sleep 304 && echo ${MARKER}-e' </dev/null >/dev/null 2>&1 &
          sleep 0.5
  detached-wait:
    executor: local
    steps:
      - name: detach and wait
        run: |
          setsid sh -c 'sleep 305 && echo ${MARKER}-f' </dev/null >/dev/null 2>&1 &
          sleep 306 && echo ${MARKER}-g
  reaper:
    executor: local
    timeout: 20s
    steps:
      - name: wait for all children
        run: exec perl -e 'fork or exit; 1 while wait() != -1; print "all children reaped\\n"'
  kill-children:
    executor: local
    steps:
      - name: kill children
        run: |
          pkill -P $$
          echo "group=$(ps -o pgid= -p $$ | tr -d ' ')"
          sleep 309
  escaped:
    executor: local
    steps:
      - name: escape
        run: |
          setsid env -i /bin/sh -c 'sleep 308; echo ${MARKER}-h' &
          sleep 0.5
          echo first step ends
      - name: next
        run: echo second step ran
`),
      SLIPWAY_EXECUTOR: 'local',
    });
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('kills a setsid process after its step', async () => {
    const id = await harness.trigger('detached', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    await waitFor(() => processesWith(`${MARKER}-e`).length === 0, 2_000);
    expect(processesWith('sleep 304')).toEqual([]);
  });

  it('kills steps of a dead worker at start', async () => {
    const sleeper = (owner: string, taskId?: string) =>
      spawn('sleep', ['307'], {
        env: {
          PATH: process.env.PATH,
          [PROCESS_OWNER_VARIABLE]: owner,
          ...(taskId === undefined ? {} : { SLIPWAY_TASK_ID: taskId }),
        },
        stdio: 'ignore',
      });
    const namespace = PID_NAMESPACE!;
    const workspaces = makeTempDir();
    const install = installId(workspaces);
    // Our pid with another start time is a worker whose pid a new process took.
    const reused = sleeper(`${process.pid}.1.${namespace}.${install}`, 'ci-0000dead.1.0');
    // A pid above Linux's limit of 4,194,304 is a worker that has ended.
    const noOwner = sleeper(`4194305.1.${namespace}.${install}`);
    const live = sleeper(`${processOwner(process.pid)!}.${install}`, 'ci-0000live.1.0');
    // A worker in a container: its pid means another process here, or none.
    const contained = sleeper(`4194305.1.${Number(namespace) + 1}.${install}`, 'ci-0000cont.1.0');
    // A worker of another install on this host, with its own workspaces.
    const other = sleeper(`4194305.1.${namespace}.${installId(makeTempDir())}`, 'ci-0000othr.1.0');
    // Workers of older versions, whose variable names no install or no namespace.
    const older = sleeper(`4194305.1.${namespace}`, 'ci-0000old1.1.0');
    const oldest = sleeper('4194305.1', 'ci-0000old0.1.0');
    const all = [reused, noOwner, live, contained, other, older, oldest];
    const lines: LogLine[] = [];
    try {
      await waitFor(() => processesWith('sleep 307').length === all.length, 5_000);
      new LocalExecutor(pino({ level: 'info' }, logSink(lines)), workspaces);
      await waitFor(() => processesWith('sleep 307').length === all.length - 2, 5_000);
      expect(processesWith('sleep 307').sort()).toEqual(
        [live.pid, contained.pid, other.pid, older.pid, oldest.pid].sort(),
      );
      await waitFor(() => lines.length > 0, 2_000);
    } finally {
      for (const child of all) child.kill('SIGKILL');
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe(40);
    expect(lines[0]!.msg).toBe('killed 2 step processes left running by ended workers');
    expect(lines[0]!.pids!.sort()).toEqual([reused.pid, noOwner.pid].sort());
    expect(lines[0]!.taskIds).toEqual(['ci-0000dead.1.0']);
  });

  it('kills steps of a dead worker before a repeated attempt', async () => {
    const workspaces = makeTempDir();
    const lines: LogLine[] = [];
    const executor = new LocalExecutor(pino({ level: 'info' }, logSink(lines)), workspaces);
    // After the search at construction, a worker of this install ends and leaves a step.
    await executor.stopLeftovers();
    const owner = `4194305.1.${PID_NAMESPACE!}.${installId(workspaces)}`;
    const leftover = spawn('sleep', ['308'], {
      env: { PATH: process.env.PATH, [PROCESS_OWNER_VARIABLE]: owner },
      stdio: 'ignore',
    });
    try {
      await waitFor(() => processesWith('sleep 308').length === 1, 5_000);
      await executor.stopLeftovers();
      // The kill was sent before stopLeftovers resolved, and the process ends a moment later.
      // No other search runs meanwhile: the executor runs no task.
      await waitFor(() => processesWith('sleep 308').length === 0, 2_000);
      await waitFor(() => lines.length > 0, 2_000);
      expect(lines.map((line) => line.pids)).toEqual([[leftover.pid]]);
    } finally {
      leftover.kill('SIGKILL');
    }
  });

  it('kills an env -i setsid process', async () => {
    // The host must allow step cgroups, or this test would check the fallback instead.
    expect(stepCgroupParent()).toBeDefined();
    try {
      const id = await harness.trigger('escaped', { commit: repo.commit });
      const job = await harness.waitForJob(id, 15_000);
      expect(job.status).toBe('success');
      const logs = await harness.logs(id);
      expect(logs).toContain('first step ends');
      expect(logs).toContain('second step ran');
      // The step's cgroup kill ended it, so it held the output open for no grace period.
      expect(logs).not.toContain('still holds its output open');
      await waitFor(() => processesWith(`${MARKER}-h`).length === 0, 2_000);
      // Each task's cleanup removes its cgroup. This file's worker runs in this process.
      await waitFor(() => ownStepCgroups().length === 0, 5_000);
    } finally {
      for (const pid of processesWith(`${MARKER}-h`)) process.kill(pid, 'SIGKILL');
      for (const pid of processesWith('sleep 308')) process.kill(pid, 'SIGKILL');
    }
  });

  it('gives a step no child of its own', async () => {
    const id = await harness.trigger('reaper', { commit: repo.commit });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('success');
    expect(await harness.logs(id)).toContain('all children reaped');
  });

  it('keeps the guard after pkill -P', async () => {
    const id = await harness.trigger('kill-children', { commit: repo.commit });
    let logs = '';
    const deadline = Date.now() + 10_000;
    while (!/group=\d+\n/.test(logs) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      logs = await harness.logs(id);
    }
    const group = Number(/group=(\d+)\n/.exec(logs)?.[1]);
    const guards = processesWith('read -r line <&3').filter((pid) => processGroup(pid) === group);
    await harness.server.request('POST', `/api/job/${id}/cancel`, { token: harness.token });
    await harness.waitForJob(id, 10_000);
    expect(guards).toHaveLength(1);
  });

  it('kills a setsid process on cancel', async () => {
    const id = await harness.trigger('detached-wait', { commit: repo.commit });
    await harness.waitForStatus(id, 'running');
    await waitFor(() => processesWith(`${MARKER}-f`).length > 0, 5_000);
    const cancel = await harness.server.request('POST', `/api/job/${id}/cancel`, {
      token: harness.token,
    });
    expect(cancel.status).toBe(202);
    const job = await harness.waitForJob(id, 10_000);
    expect(job.status).toBe('cancelled');
    await waitFor(() => processesWith(`${MARKER}-f`).length === 0, 2_000);
    expect(processesWith('sleep 305')).toEqual([]);
    expect(processesWith(`${MARKER}-g`)).toEqual([]);
  });
});

describe('local executor without step cgroups', () => {
  it('ends a step whose output an escaped process holds', async () => {
    const workspace = makeTempDir();
    const executor = new LocalExecutor(pino({ level: 'silent' }), makeTempDir(), {
      stepCgroups: false,
    });
    const spec = directSpec(workspace, [
      {
        name: 'escape',
        run: `setsid env -i /bin/sh -c 'sleep 311; echo ${MARKER}-i' &\nsleep 0.5\necho first step ends`,
      },
      { name: 'next', run: 'echo second step ran' },
    ]);
    const { output, text } = collectOutput();
    try {
      const result = await executor.run(spec, output, new AbortController().signal);
      await executor.cleanup(spec);
      expect(result.exitCode).toBe(0);
      expect(text()).toContain('first step ends');
      expect(text()).toContain('step "escape" started still holds its output open');
      expect(text()).toContain('second step ran');
      // The process cleared its environment, so no kill found it.
      expect(processesWith(`${MARKER}-i`)).toHaveLength(1);
    } finally {
      for (const pid of processesWith(`${MARKER}-i`)) process.kill(pid, 'SIGKILL');
      for (const pid of processesWith('sleep 311')) process.kill(pid, 'SIGKILL');
    }
  });
});

describe('local executor step cgroups', () => {
  it("removes a dead worker's cgroup", async () => {
    const parent = stepCgroupParent();
    expect(parent).toBeDefined();
    const workspaces = makeTempDir();
    const install = installId(workspaces);
    // A pid above Linux's limit of 4,194,304 is a worker that has ended.
    const dead = { pid: 4194305, ticks: '1', namespace: PID_NAMESPACE! };
    const dir = path.join(parent!, stepCgroupName(install, dead, 'a'.repeat(24)));
    fs.mkdirSync(dir);
    const leftover = spawn('sleep', ['312'], { stdio: 'ignore', env: { PATH: process.env.PATH } });
    const lines: LogLine[] = [];
    try {
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(leftover.pid));
      const executor = new LocalExecutor(pino({ level: 'info' }, logSink(lines)), workspaces);
      await executor.stopLeftovers();
      await waitFor(() => processesWith('sleep 312').length === 0, 2_000);
      await waitFor(() => !fs.existsSync(dir), 2_000);
      // The search that the executor starts when it is made may be the one that logs.
      await waitFor(() => lines.length > 0, 2_000);
      expect(lines.map((line) => line.pids)).toContainEqual([leftover.pid]);
    } finally {
      leftover.kill('SIGKILL');
      await waitFor(() => removeCgroup(dir), 2_000);
    }
  });

  it("leaves another install's processes", async () => {
    const parent = stepCgroupParent()!;
    const dead = { pid: 4194305, ticks: '1', namespace: PID_NAMESPACE! };
    const otherInstall = installId(makeTempDir());
    const empty = path.join(parent, stepCgroupName(otherInstall, dead, 'c'.repeat(24)));
    const populated = path.join(parent, stepCgroupName(otherInstall, dead, 'd'.repeat(24)));
    fs.mkdirSync(empty);
    fs.mkdirSync(populated);
    const other = spawn('sleep', ['313'], { stdio: 'ignore', env: { PATH: process.env.PATH } });
    try {
      fs.writeFileSync(path.join(populated, 'cgroup.procs'), String(other.pid));
      await new LocalExecutor(pino({ level: 'silent' }), makeTempDir()).stopLeftovers();
      expect(fs.existsSync(empty)).toBe(false);
      expect(fs.existsSync(populated)).toBe(true);
      expect(processesWith('sleep 313')).toEqual([other.pid]);
    } finally {
      other.kill('SIGKILL');
      await waitFor(() => processesWith('sleep 313').length === 0, 2_000);
      await waitFor(() => removeCgroup(populated), 2_000);
      removeCgroup(empty);
    }
  });

  it('leaves the cgroup of a live worker', async () => {
    const parent = stepCgroupParent()!;
    const workspaces = makeTempDir();
    const install = installId(workspaces);
    const [pid, ticks, namespace] = processOwner(process.ppid)!.split('.') as [
      string,
      string,
      string,
    ];
    const dir = path.join(
      parent,
      stepCgroupName(install, { pid: Number(pid), ticks, namespace }, 'b'.repeat(24)),
    );
    fs.mkdirSync(dir);
    try {
      await new LocalExecutor(pino({ level: 'silent' }), workspaces).stopLeftovers();
      expect(fs.existsSync(dir)).toBe(true);
    } finally {
      fs.rmdirSync(dir);
    }
  });

  it('removes the cgroup of an unstarted task', async () => {
    const executor = new LocalExecutor(pino({ level: 'silent' }), makeTempDir());
    const spec = directSpec('/nonexistent/slipway-workspace', [{ name: 'build', run: 'true' }]);
    const { output } = collectOutput();
    await expect(executor.run(spec, output, new AbortController().signal)).rejects.toThrow(
      ExecutionError,
    );
    expect(ownStepCgroups()).toHaveLength(1);
    await executor.cleanup(spec);
    expect(ownStepCgroups()).toEqual([]);
  });
});

function directSpec(workspace: string, steps: ExecutionSpec['steps']): ExecutionSpec {
  return {
    taskId: 'ci-0000abcd.1.0',
    jobId: 'ci-0000abcd',
    attempt: 1,
    steps,
    env: {},
    image: null,
    network: null,
    user: null,
    resources: { memory: undefined, cpus: undefined, pids: undefined },
    workspace,
    scratch: workspace,
    labels: {},
  };
}

function collectOutput() {
  const chunks: string[] = [];
  const output = {
    write: (chunk: Buffer) => void chunks.push(chunk.toString()),
    note: (line: string) => void chunks.push(`${line}\n`),
  };
  return { output, text: () => chunks.join('') };
}

/** Removes a cgroup that is empty, and returns whether it is gone. */
function removeCgroup(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
  return true;
}

/** Returns the step cgroups that workers in this process made and have not removed. */
function ownStepCgroups(): string[] {
  const parent = stepCgroupParent();
  if (parent === undefined) return [];
  return fs
    .readdirSync(parent)
    .filter((name) => parseStepCgroupName(name)?.owner.pid === process.pid);
}

/** Returns the process group of `pid`, from /proc/<pid>/stat. */
function processGroup(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command name, which may contain spaces, in brackets.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[2]);
}

interface LogLine {
  level: number;
  msg: string;
  pids?: number[];
  taskIds?: string[];
}

function logSink(lines: LogLine[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as LogLine);
      done();
    },
  });
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('local executor steps that cannot start', () => {
  const run = (workspace: string, env: Record<string, string>) => {
    const lines: string[] = [];
    const spec: ExecutionSpec = { ...directSpec(workspace, [{ name: 'build', run: 'true' }]), env };
    const output = { write: () => undefined, note: (line: string) => lines.push(line) };
    const executor = new LocalExecutor(pino({ level: 'silent' }), workspace);
    // The worker cleans up after every task, also one whose step could not start.
    const result = executor.run(spec, output, new AbortController().signal);
    void result.catch(() => undefined).then(() => executor.cleanup(spec));
    return { lines, result };
  };

  it('raises ExecutionError for a missing workspace', async () => {
    const { lines, result } = run('/nonexistent/slipway-workspace', {});
    await expect(result).rejects.toThrow(ExecutionError);
    await expect(result).rejects.toThrow(/could not start the step: spawn \/bin\/sh ENOENT/);
    expect(lines.some((line) => line.includes('could not start the step'))).toBe(true);
  });

  it('raises ExecutionError for an environment too large to start', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-e2big-'));
    // Linux starts no process with one variable over 128 KiB (MAX_ARG_STRLEN).
    const { result } = run(dir, { HUGE: 'x'.repeat(200 * 1024) });
    await expect(result).rejects.toThrow(ExecutionError);
    await expect(result).rejects.toThrow(/E2BIG/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('names a variable with a NUL character but not its value', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-nul-'));
    const { lines, result } = run(dir, { MY_SECRET: 'supersecretvalue\u0000tail' });
    await expect(result).rejects.toThrow('variable MY_SECRET contains a NUL character');
    await expect(result).rejects.not.toThrow(/supersecret/);
    expect(lines.join('\n')).not.toContain('supersecret');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
