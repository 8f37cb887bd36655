import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, childEnv, ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { cancelWithStoredReason } from '../support/stored-reason.js';
import { writePipelineFile } from '../support/execution.js';
import { revokeToken } from '../../src/store/tokens.js';
import { AgentClient } from './agent-client.js';
import { holdTriggerResponses, startApiProxy } from './api-proxy.js';
import { waitFor } from './helpers.js';

let server: TestServer;
let agent: AgentClient;
let triggerToken: string;
let counter = 0;

function nextCommit(): string {
  counter += 1;
  return counter.toString(16).padStart(40, 'd');
}

function env(extra: Record<string, string> = {}) {
  return { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: triggerToken, ...extra };
}

/** Starts `slipway trigger <args>`, for tests that send it signals. */
function startTrigger(args: string[], extraEnv: Record<string, string>) {
  const child = spawn(process.execPath, [CLI_PATH, 'trigger', ...args], {
    env: childEnv(extraEnv),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

async function jobIdFor(commit: string): Promise<string> {
  return waitFor(async () => {
    const list = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    return list.body.jobs[0]?.id as string | undefined;
  });
}

beforeAll(async () => {
  await ensureBuilt();
  server = await startTestServer();
  agent = await AgentClient.register(server, 'cli-test-worker');
  triggerToken = await server.token('trigger');
});

afterAll(async () => {
  await server.close();
});

describe('slipway trigger', () => {
  it('queues a job and writes the step output', async () => {
    const commit = nextCommit();
    const outputFile = path.join(makeTempDir(), 'github-output');
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit, '--branch', 'feature/cli'],
      env({ GITHUB_OUTPUT: outputFile }),
    );
    expect(result.code).toBe(0);
    const jobId = result.stdout.trim();
    expect(jobId).toMatch(/^ci-[0-9a-f]{8}$/);
    expect(result.stderr).toContain(`slipway: triggered ${jobId} for ${commit} (status queued)`);
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.commit).toBe(commit);
    expect(job.body.branch).toBe('feature/cli');
    expect(fs.readFileSync(outputFile, 'utf8')).toContain(`job-id=${jobId}\n`);
  });

  it('finds the same job when a GitHub run is re-run', async () => {
    const commit = nextCommit();
    const runEnv = env({ GITHUB_RUN_ID: '987654', GITHUB_RUN_ATTEMPT: '1' });
    const first = await runCli(['trigger', 'ci', '--commit', commit], runEnv);
    const second = await runCli(['trigger', 'ci', '--commit', commit], runEnv);
    expect(first.code).toBe(0);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    const jobId = first.stdout.trim();
    expect(first.stderr).toContain(`slipway: triggered ${jobId} for ${commit} (status queued)\n`);
    expect(second.stderr).toContain(
      `slipway: found ${jobId} for ${commit} (status queued): an earlier trigger with ` +
        'GitHub run 987654 attempt 1 created it\n',
    );
    expect(second.stderr).not.toContain('triggered');
  });

  it('names the Idempotency-Key of a found job', async () => {
    const commit = nextCommit();
    const args = ['trigger', 'ci', '--commit', commit, '--idempotency-key', 'build-42'];
    const first = await runCli(args, env());
    const second = await runCli(args, env());
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).toContain(
      `slipway: found ${first.stdout.trim()} for ${commit} (status queued): an earlier ` +
        'trigger with Idempotency-Key "build-42" created it\n',
    );
  });

  it('follows the logs and exits 0 on success', async () => {
    const commit = nextCommit();
    const run = runCli(
      [
        'trigger',
        'ci',
        '--commit',
        commit,
        '--branch',
        'main',
        '--wait',
        '--poll-interval',
        '200ms',
      ],
      env(),
    );
    const jobId = await jobIdFor(commit);
    const [task] = await agent.claimJob(jobId, 1);
    await agent.log(task!, 'collecting tests\n');
    await agent.log(task!, '3 passed in 0.1s\n');
    await agent.finish(task!, 'success');

    const result = await run;
    expect(result.stderr).toContain(`job ${jobId} ended success`);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('collecting tests\n3 passed in 0.1s\n');
    expect(result.stdout.match(/collecting tests/g)).toHaveLength(1);
  });

  it('prefixes each task of a matrix', async () => {
    const commit = nextCommit();
    const run = runCli(
      ['trigger', 'ci', '--commit', commit, '--python-versions', '3.11,3.12', '--wait'],
      env({}),
    );
    const jobId = await jobIdFor(commit);
    const tasks = await agent.claimJob(jobId, 2);
    for (const task of tasks) await agent.log(task, `hello from ${task.task_id}\n`);
    for (const task of tasks) await agent.finish(task, 'success');
    const result = await run;
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`[ci (3.11)] hello from ${tasks[0]!.task_id}`);
    expect(result.stdout).toContain(`[ci (3.12)] hello from ${tasks[1]!.task_id}`);
  });

  const endings = [
    { status: 'failure', code: 1, exitCode: 1 },
    { status: 'error', code: 3 },
    { status: 'timed_out', code: 4 },
  ];
  for (const ending of endings) {
    it(`exits ${ending.code} when the job ends ${ending.status}`, async () => {
      const commit = nextCommit();
      const run = runCli(
        ['trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '200ms'],
        env(),
      );
      const jobId = await jobIdFor(commit);
      const [task] = await agent.claimJob(jobId, 1);
      await agent.finish(task!, ending.status, `ended ${ending.status} in a test`, ending.exitCode);
      const result = await run;
      expect(result.code).toBe(ending.code);
      expect(result.stderr).toContain(`ended ${ending.status}`);
    });
  }

  it('exits 5 when the job is cancelled', async () => {
    const commit = nextCommit();
    const run = runCli(
      ['trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '200ms'],
      env(),
    );
    const jobId = await jobIdFor(commit);
    const cancel = await server.request('POST', `/api/job/${jobId}/cancel`, {
      token: server.adminToken,
    });
    expect(cancel.status).toBe(202);
    const result = await run;
    expect(result.code).toBe(5);
  });

  it('escapes control characters in a reason', async () => {
    const commit = nextCommit();
    const summary = path.join(makeTempDir('slipway-summary-'), 'summary.md');
    const run = runCli(
      ['trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '200ms'],
      env({ GITHUB_STEP_SUMMARY: summary }),
    );
    const jobId = await jobIdFor(commit);
    const forged = `slipway: job ${jobId} ended success (exit 0)`;
    // The API rejects such a reason now, but an older one stored it.
    await cancelWithStoredReason(server, jobId, `\u001b[2Jstop\r\n${forged}\u009b`);
    const result = await run;
    expect(result.code).toBe(5);
    expect(result.stderr).toContain(`\\u001b[2Jstop\\r\\n${forged}\\u009b`);
    for (const raw of ['\u001b', '\r', '\u009b']) expect(result.stderr).not.toContain(raw);
    expect(result.stderr.split('\n')).not.toContain(forged);
    const written = fs.readFileSync(summary, 'utf8');
    for (const raw of ['\u001b', '\r', '\u009b']) expect(written).not.toContain(raw);
  });

  it('exits 6 when a dependency failed', async () => {
    const commit = nextCommit();
    const ci = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    const run = runCli(
      ['trigger', 'integration-tests', '--commit', commit, '--wait', '--poll-interval', '200ms'],
      env(),
    );
    const [task] = await agent.claimJob(ci.body.job_id, 1);
    await agent.finish(task!, 'failure', 'tests failed', 1);
    const result = await run;
    expect(result.code).toBe(6);
    expect(result.stderr).toContain('skipped');
  });

  it('exits 7 after --timeout and cancels with --cancel-on-timeout', async () => {
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit, '--wait', '--timeout', '1s', '--cancel-on-timeout'],
      env(),
    );
    expect(result.code).toBe(7);
    expect(result.stderr).toContain('still queued after --timeout 1s; cancel requested');
    const jobId = result.stdout.trim().split('\n')[0]!;
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('cancelled');
  });

  it('names a waiting job after --timeout', async () => {
    const commit = nextCommit();
    const ci = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    expect(ci.status).toBe(201);
    const result = await runCli(
      ['trigger', 'integration-tests', '--commit', commit, '--wait', '--timeout', '1s'],
      env(),
    );
    expect(result.code).toBe(7);
    expect(result.stderr).toContain('ended wait_timeout: still waiting after --timeout 1s');
    await server.request('POST', `/api/job/${ci.body.job_id}/cancel`, {
      token: server.adminToken,
    });
  });

  it('prints why a job waits, once', async () => {
    const commit = nextCommit();
    const ci = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    expect(ci.status).toBe(201);
    const result = await runCli(
      [
        'trigger',
        'integration-tests',
        '--commit',
        commit,
        '--wait',
        '--timeout',
        '1s',
        '--poll-interval',
        '200ms',
      ],
      env(),
    );
    expect(result.code).toBe(7);
    const jobId = result.stdout.trim().split('\n')[0]!;
    const line = `slipway: job ${jobId} is waiting: waiting for ci of ${commit.slice(0, 7)}\n`;
    expect(result.stderr).toContain(line);
    // Every poll returns the same reason, and only the first one prints it.
    expect(result.stderr.split(line)).toHaveLength(2);
    await server.request('POST', `/api/job/${ci.body.job_id}/cancel`, {
      token: server.adminToken,
    });
  });

  it('names a running job after --timeout', async () => {
    const commit = nextCommit();
    const run = runCli(
      [
        'trigger',
        'ci',
        '--commit',
        commit,
        '--wait',
        '--timeout',
        '3s',
        '--poll-interval',
        '200ms',
        '--cancel-on-timeout',
      ],
      env(),
    );
    const jobId = await jobIdFor(commit);
    await agent.claimJob(jobId, 1);
    const result = await run;
    expect(result.code).toBe(7);
    expect(result.stderr).toContain(
      `job ${jobId} ended wait_timeout: still running after --timeout 3s; cancel requested`,
    );
  });

  it.each(['SIGTERM', 'SIGHUP'] as const)('cancels the job on %s', async (signal) => {
    const commit = nextCommit();
    const child = spawn(
      process.execPath,
      [CLI_PATH, 'trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '200ms'],
      { env: childEnv(env()), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const jobId = await jobIdFor(commit);
    // Give the CLI time to install its signal handlers and start polling.
    await new Promise((resolve) => setTimeout(resolve, 700));
    child.kill(signal);
    expect(await exited).toBe(5);
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('cancelled');
    expect(job.body.reason).toContain(signal);
  });

  it('leaves the job with --no-cancel-on-interrupt', async () => {
    const commit = nextCommit();
    const outputFile = path.join(makeTempDir(), 'output');
    const args = ['ci', '--commit', commit, '--wait', '--poll-interval', '200ms'];
    const run = startTrigger([...args, '--no-cancel-on-interrupt'], {
      ...env(),
      GITHUB_OUTPUT: outputFile,
    });
    const jobId = await jobIdFor(commit);
    // Give the CLI time to install its signal handlers and start polling.
    await new Promise((resolve) => setTimeout(resolve, 700));
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(143);
    expect(run.stderr()).toContain(
      `slipway: stopped following job ${jobId}: SIGTERM received; the job keeps running (exit 143)`,
    );
    expect(run.stderr()).not.toContain('ended cancelled');
    expect(fs.readFileSync(outputFile, 'utf8')).toContain('status=interrupted\n');
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('queued');
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('exits 9 when the cancel is rejected', async () => {
    const commit = nextCommit();
    const dir = makeTempDir();
    const outputFile = path.join(dir, 'output');
    const summaryFile = path.join(dir, 'summary.md');
    const run = startTrigger(['ci', '--commit', commit, '--wait', '--poll-interval', '200ms'], {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger', 'cli-revoked-before-cancel'),
      GITHUB_OUTPUT: outputFile,
      GITHUB_STEP_SUMMARY: summaryFile,
    });
    const jobId = await jobIdFor(commit);
    // Give the CLI time to install its signal handlers and start polling.
    await new Promise((resolve) => setTimeout(resolve, 700));
    await revokeToken(server.context.store.db, { name: 'cli-revoked-before-cancel' });
    run.child.kill('SIGTERM');

    expect(await run.exited).toBe(9);
    const error = `POST /api/job/${jobId}/cancel failed with 401`;
    expect(run.stderr()).toContain(
      `slipway: cancelling job ${jobId} after SIGTERM failed, so the job may still be running: ${error}`,
    );
    expect(run.stderr()).toMatch(/ \(exit 9\)\n$/);
    expect(fs.readFileSync(outputFile, 'utf8')).toBe(
      `job-id=${jobId}\nstatus=queued\nstatus=cancel_failed\n`,
    );
    expect(fs.readFileSync(summaryFile, 'utf8')).toContain(
      `Cancelling Slipway job \`${jobId}\` after SIGTERM failed`,
    );
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('queued');
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('exits 9 when the API is gone', async () => {
    const commit = nextCommit();
    const own = await startTestServer();
    let closed = false;
    try {
      const run = startTrigger(['ci', '--commit', commit, '--wait', '--poll-interval', '200ms'], {
        SLIPWAY_API_URL: own.url,
        SLIPWAY_TOKEN: await own.token('trigger'),
      });
      await waitFor(() => (run.stdout() !== '' ? true : undefined));
      const jobId = run.stdout().trim();
      // Give the CLI time to install its signal handlers and start polling.
      await new Promise((resolve) => setTimeout(resolve, 700));
      await own.close();
      closed = true;
      run.child.kill('SIGTERM');

      expect(await run.exited).toBe(9);
      expect(run.stderr()).toContain(
        `slipway: cancelling job ${jobId} after SIGTERM failed, so the job may still be running: ` +
          `cannot reach the Slipway API at ${own.url}: connect ECONNREFUSED`,
      );
    } finally {
      if (!closed) await own.close();
    }
  });

  it('reports a job that ended before the cancel', async () => {
    const commit = nextCommit();
    // The job succeeds while the cancel request is on its way to the API.
    const proxy = await startApiProxy(server.url, {
      async beforeForward(method, url) {
        if (method !== 'POST' || !url.endsWith('/cancel')) return;
        const [task] = await agent.claimJob(await jobIdFor(commit), 1);
        await agent.finish(task!, 'success');
      },
    });
    try {
      const run = startTrigger(['ci', '--commit', commit, '--wait', '--poll-interval', '200ms'], {
        SLIPWAY_API_URL: proxy.url,
        SLIPWAY_TOKEN: triggerToken,
      });
      const jobId = await jobIdFor(commit);
      // Give the CLI time to install its signal handlers and start polling.
      await new Promise((resolve) => setTimeout(resolve, 700));
      run.child.kill('SIGTERM');

      expect(await run.exited).toBe(0);
      expect(run.stderr()).toContain(
        `slipway: job ${jobId} ended success: it ended before the cancel that SIGTERM requested (exit 0)`,
      );
    } finally {
      await proxy.close();
    }
  });

  it.each([
    ['SIGTERM', ['--wait', '--poll-interval', '200ms']],
    ['SIGINT', []],
  ] as const)('cancels a job triggered during %s', async (signal, extra) => {
    const commit = nextCommit();
    const hold = await holdTriggerResponses(server.url);
    try {
      const run = startTrigger(['ci', '--commit', commit, ...extra], {
        SLIPWAY_API_URL: hold.proxy.url,
        SLIPWAY_TOKEN: triggerToken,
      });
      await hold.held;
      run.child.kill(signal);
      // The CLI waits for the response, so it is still running a second later.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(run.child.exitCode).toBeNull();
      hold.release();

      expect(await run.exited).toBe(5);
      const jobId = await jobIdFor(commit);
      expect(run.stdout()).toBe(`${jobId}\n`);
      const reason = `slipway trigger received ${signal} (the workflow run was cancelled)`;
      expect(run.stderr()).toContain(`slipway: job ${jobId} ended cancelled: ${reason} (exit 5)`);
      const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
      expect(job.body.reason).toBe(reason);
    } finally {
      await hold.close();
    }
  });

  it('finds a held job by its Idempotency-Key', async () => {
    const commit = nextCommit();
    const hold = await holdTriggerResponses(server.url);
    try {
      const run = startTrigger(
        ['ci', '--commit', commit, '--idempotency-key', 'held-1', '--wait'],
        {
          SLIPWAY_API_URL: hold.proxy.url,
          SLIPWAY_TOKEN: triggerToken,
        },
      );
      await hold.held;
      run.child.kill('SIGTERM');

      // The first response stays held, and the repeated request finds the job it created.
      expect(await run.exited).toBe(5);
      const jobId = await jobIdFor(commit);
      expect(run.stderr()).toContain(
        'slipway: the trigger request had no response within 3s of SIGTERM; sending it again ' +
          'to find the job of Idempotency-Key "held-1"\n',
      );
      expect(run.stderr()).toContain(`slipway: found ${jobId} for ${commit}`);
      expect(run.stderr()).toContain(`slipway: job ${jobId} ended cancelled`);
      const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
    } finally {
      await hold.close();
    }
  });

  it('exits 9 when a held trigger has no key', async () => {
    const commit = nextCommit();
    const hold = await holdTriggerResponses(server.url);
    const outputFile = path.join(makeTempDir(), 'output');
    try {
      const run = startTrigger(['ci', '--commit', commit, '--wait'], {
        SLIPWAY_API_URL: hold.proxy.url,
        SLIPWAY_TOKEN: triggerToken,
        GITHUB_OUTPUT: outputFile,
      });
      await hold.held;
      run.child.kill('SIGTERM');

      expect(await run.exited).toBe(9);
      expect(run.stderr()).toContain(
        'slipway: the trigger request had no response within 3s of SIGTERM, so a job for ' +
          `commit ${commit} may have been queued and may run (exit 9)`,
      );
      expect(run.stdout()).toBe('');
      expect(fs.readFileSync(outputFile, 'utf8')).toBe('status=cancel_failed\n');
      // The message is true: the API created the job, and nothing cancelled it.
      const jobId = await jobIdFor(commit);
      const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
      expect(job.body.status).toBe('queued');
      await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
    } finally {
      await hold.close();
    }
  });

  it('says when the cancel after --timeout fails', async () => {
    const commit = nextCommit();
    const run = startTrigger(
      ['ci', '--commit', commit, '--wait', '--timeout', '2s', '--cancel-on-timeout'],
      {
        SLIPWAY_API_URL: server.url,
        SLIPWAY_TOKEN: await server.token('trigger', 'cli-revoked-before-timeout'),
      },
    );
    const jobId = await jobIdFor(commit);
    await revokeToken(server.context.store.db, { name: 'cli-revoked-before-timeout' });

    expect(await run.exited).toBe(7);
    expect(run.stderr()).toContain(
      `; cancel request failed: POST /api/job/${jobId}/cancel failed with 401`,
    );
    expect(run.stderr()).not.toContain('cancel requested');
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('exits 8 when the API rejects the token', async () => {
    const result = await runCli(
      ['trigger', 'ci', '--commit', nextCommit()],
      env({ SLIPWAY_TOKEN: 'slw_not-a-real-token' }),
    );
    expect(result.code).toBe(8);
    expect(result.stderr).toContain('401');
    expect(result.stderr).not.toContain('slw_not-a-real-token');
  });

  it('exits 8 when the API cannot be reached', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const result = await runCli(
      ['trigger', 'ci', '--commit', nextCommit()],
      env({ SLIPWAY_API_URL: `http://127.0.0.1:${port}` }),
    );
    expect(result.code).toBe(8);
    expect(result.stderr).toContain('cannot reach the Slipway API');
  });

  it('prints the status of a waiting job', async () => {
    const commit = nextCommit();
    const result = await runCli(['trigger', 'integration-tests', '--commit', commit], env());
    expect(result.code).toBe(0);
    const jobId = result.stdout.trim();
    expect(result.stderr).toContain(`slipway: triggered ${jobId} for ${commit} (status waiting)`);
    expect(result.stderr).not.toContain('queued');
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('rejects --timeout without --wait', async () => {
    const commit = nextCommit();
    const result = await runCli(['trigger', 'ci', '--commit', commit, '--timeout', '5m'], env());
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("option '--timeout <duration>' requires option '--wait'");
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(jobs.body.jobs).toEqual([]);
  });

  it('rejects wait options without --wait', async () => {
    const cases = [
      {
        args: ['--poll-interval', '2s'],
        message: "option '--poll-interval <duration>' requires option '--wait'",
      },
      {
        args: ['--cancel-on-timeout'],
        message: "option '--cancel-on-timeout' requires option '--wait'",
      },
      {
        args: ['--wait', '--cancel-on-timeout'],
        message: "option '--cancel-on-timeout' requires option '--timeout <duration>'",
      },
    ];
    for (const { args, message } of cases) {
      const commit = nextCommit();
      const result = await runCli(['trigger', 'ci', '--commit', commit, ...args], env());
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain(message);
      const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
        token: server.adminToken,
      });
      expect(jobs.body.jobs).toEqual([]);
    }
  });

  it('help shows the poll interval default in seconds', async () => {
    const result = await runCli(['trigger', '--help'], {});
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/--poll-interval <duration>[^]*\(default: 2s\)/);
    expect(result.stdout).not.toContain('(default: 2000)');
    expect(result.stdout).toContain('a bare number is seconds');
  });

  it('rejects a poll interval over 5m', async () => {
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '25d'],
      env(),
      10_000,
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("option '--poll-interval <duration>' argument '25d'");
    expect(result.stderr).toContain('must be at most 5m');
    expect(result.stderr).not.toContain('TimeoutOverflowWarning');
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(jobs.body.jobs).toEqual([]);
  });

  it('waits with a --timeout of 25d', async () => {
    const commit = nextCommit();
    const run = runCli(
      [
        'trigger',
        'ci',
        '--commit',
        commit,
        '--wait',
        '--timeout',
        '25d',
        '--poll-interval',
        '200ms',
      ],
      env(),
    );
    const jobId = await jobIdFor(commit);
    const [task] = await agent.claimJob(jobId, 1);
    await agent.finish(task!, 'success');
    const result = await run;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain(`job ${jobId} ended success`);
    expect(result.stderr).not.toContain('TimeoutOverflowWarning');
  });

  it('rejects a run attempt without run id', async () => {
    const cases: Array<{ args: string[]; extraEnv: Record<string, string>; source: string }> = [
      { args: ['--github-run-attempt', '2'], extraEnv: {}, source: '' },
      { args: [], extraEnv: { GITHUB_RUN_ATTEMPT: '2' }, source: ' (set from GITHUB_RUN_ATTEMPT)' },
    ];
    for (const { args, extraEnv, source } of cases) {
      const commit = nextCommit();
      const result = await runCli(['trigger', 'ci', '--commit', commit, ...args], env(extraEnv));
      expect(result.code).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain(
        `option '--github-run-attempt <n>'${source} requires option '--github-run-id <id>'`,
      );
      const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
        token: server.adminToken,
      });
      expect(jobs.body.jobs).toEqual([]);
    }
  });

  it('rejects a repeated --param key', async () => {
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit, '--param', 'a=1', '--param', 'a=2'],
      env(),
    );
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain("option '--param <key=value>' argument 'a=2' is invalid");
    expect(result.stderr).toContain('key "a" is repeated');
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(jobs.body.jobs).toEqual([]);
  });

  it('sends distinct --param keys', async () => {
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit, '--param', 'a=1', '--param', 'constructor=2'],
      env(),
    );
    expect(result.code, result.stderr).toBe(0);
    const job = await server.request('GET', `/api/job/${result.stdout.trim()}`, {
      token: server.adminToken,
    });
    expect(job.body.params).toEqual({ a: '1', constructor: '2' });
  });

  it('hides credentials in the API URL', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const result = await runCli(
      ['trigger', 'ci', '--commit', nextCommit()],
      env({ SLIPWAY_API_URL: `http://user:s3cret-pw@127.0.0.1:${port}` }),
    );
    expect(result.code).toBe(8);
    expect(result.stderr).toContain(`cannot reach the Slipway API at http://***@127.0.0.1:${port}`);
    expect(result.stderr).not.toContain('s3cret-pw');
    expect(result.stderr).not.toContain('user:');
  });

  it('triggers through an API URL with credentials', async () => {
    const url = new URL(server.url);
    url.username = 'user';
    url.password = 's3cret-pw';
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit],
      env({ SLIPWAY_API_URL: url.href.replace(/\/$/, '') }),
    );
    expect(result.stderr).not.toContain('s3cret-pw');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(await jobIdFor(commit));
  });

  it('hides credentials in an invalid API URL', async () => {
    const result = await runCli(
      ['trigger', 'ci', '--commit', nextCommit()],
      env({ SLIPWAY_API_URL: 'ftp://user:s3cret-pw@127.0.0.1:5400' }),
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('SLIPWAY_API_URL');
    expect(result.stderr).toContain('ftp://***@127.0.0.1:5400');
    expect(result.stderr).not.toContain('s3cret-pw');
  });

  it('ignores server settings in its environment', async () => {
    // A workflow's environment may set these for the application it builds, with values that
    // a Slipway server would reject.
    const commit = nextCommit();
    const result = await runCli(
      ['trigger', 'ci', '--commit', commit],
      env({
        LOG_LEVEL: 'verbose',
        DOCKER_HOST: 'localhost:2375',
        GITHUB_WEBHOOK_SECRET: 'short',
        SLIPWAY_PUBLIC_URL: 'slipway.example.com',
        SLIPWAY_OIDC_REFS: 'main',
      }),
    );
    expect(result.stderr).not.toContain('configuration');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(await jobIdFor(commit));
  });

  it('exits 2 without SLIPWAY_TOKEN', async () => {
    const result = await runCli(['trigger', 'ci', '--commit', nextCommit()], {
      SLIPWAY_API_URL: server.url,
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('slipway token create --name <name> --role trigger');
  });

  it('exits 2 for a commit that is not a hex SHA', async () => {
    const result = await runCli(['trigger', 'ci', '--commit', 'xyz', '--wait'], env());
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain("option '--commit <sha>' argument 'xyz' is invalid");
    expect(result.stderr).toContain('a hex SHA of 7 to 64 digits');
  });
});

describe('slipway trigger matrix values', () => {
  let matrixServer: TestServer;
  let token: string;

  beforeAll(async () => {
    const pipelines = writePipelineFile(
      [
        'pipelines:',
        '  lint:',
        '    executor: local',
        "    matrix: { node: { from: node_versions, default: ['20'] } }",
        '    steps: [{ run: make lint }]',
      ].join('\n'),
    );
    matrixServer = await startTestServer({ SLIPWAY_PIPELINES: pipelines });
    token = await matrixServer.token('trigger');
  });
  afterAll(async () => {
    await matrixServer.close();
  });

  const trigger = (args: string[]) =>
    runCli(['trigger', 'lint', '--commit', nextCommit(), ...args], {
      SLIPWAY_API_URL: matrixServer.url,
      SLIPWAY_TOKEN: token,
    });
  const jobOf = async (stdout: string) =>
    (
      await matrixServer.request('GET', `/api/job/${stdout.trim()}`, {
        token: matrixServer.adminToken,
      })
    ).body;

  it('--matrix sends one task per value', async () => {
    const result = await trigger(['--matrix', 'node_versions=20,22']);
    expect(result.code, result.stderr).toBe(0);
    const job = await jobOf(result.stdout);
    expect(job.inputs).toEqual({ node_versions: ['20', '22'] });
    expect(job.tasks.map((task: { matrix: unknown }) => task.matrix)).toEqual([
      { node: '20' },
      { node: '22' },
    ]);
  });

  it('--param gives an axis one value', async () => {
    const result = await trigger(['--param', 'node_versions=20,22']);
    expect(result.code, result.stderr).toBe(0);
    const job = await jobOf(result.stdout);
    expect(job.tasks.map((task: { matrix: unknown }) => task.matrix)).toEqual([{ node: '20,22' }]);
  });

  it('--matrix rejects a field another option sets', async () => {
    const result = await trigger(['--matrix', 'branch=main']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("option '--matrix <field=list>' argument 'branch=main'");
    expect(result.stderr).toContain('"branch" is no matrix field; set it with --branch');
  });

  it('--matrix rejects a repeated field', async () => {
    const result = await trigger(['--matrix', 'node_versions=20', '--matrix', 'node_versions=22']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('field "node_versions" is repeated');
  });

  it('--matrix and --python-versions conflict', async () => {
    const result = await trigger(['--python-versions', '3.12', '--matrix', 'python_versions=3.11']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('both set python_versions');
  });

  it('help names the pipeline file and --matrix', async () => {
    const result = await runCli(['trigger', '--help'], {});
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("one that the server's pipeline file");
    expect(result.stdout).toContain('--matrix <field=list>');
    expect(result.stdout).not.toContain('job type: ci, integration-tests, deploy');
  });
});
