import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRepository, startHarness, writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { cancelWithStoredReason } from '../support/stored-reason.js';
import { revokeToken } from '../../src/store/tokens.js';
import { AgentClient } from './agent-client.js';
import { holdTriggerResponses, startApiProxy } from './api-proxy.js';
import { waitFor } from './helpers.js';
import {
  loadWorkflow,
  REPO_ROOT,
  runTriggerScript,
  runWorkflowJob,
  startTriggerScript,
  type RunnerContext,
} from './workflow-runner.js';

const EXAMPLES = path.join(REPO_ROOT, 'examples', 'github-workflows');
const EXPECTED_EXAMPLES = [
  'ci.yml',
  'deploy.yml',
  'health-check.yml',
  'integration-tests.yml',
  'recovery.yml',
  'rollback.yml',
];

let server: TestServer;
let agent: AgentClient;
let runCounter = 1000;

beforeAll(async () => {
  server = await startTestServer();
  agent = await AgentClient.register(server, 'workflow-test-worker');
});
afterAll(async () => {
  await server.close();
});

/** Builds the environment and contexts GitHub Actions gives a push to `branch`. */
async function runnerContext(commit: string, branch: string): Promise<RunnerContext> {
  runCounter += 1;
  const github = {
    sha: commit,
    ref: `refs/heads/${branch}`,
    ref_name: branch,
    head_ref: '',
    run_id: String(runCounter),
    run_attempt: '1',
    repository: 'octo-org/hello-world',
    event_name: 'push',
    event: {},
  };
  return {
    github,
    vars: { SLIPWAY_API_URL: server.url },
    secrets: {
      SLIPWAY_TOKEN: await server.token('trigger'),
      SLIPWAY_ADMIN_TOKEN: server.adminToken,
    },
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      CI: 'true',
      GITHUB_ACTIONS: 'true',
      GITHUB_SHA: commit,
      GITHUB_REF: github.ref,
      GITHUB_REF_NAME: branch,
      GITHUB_RUN_ID: github.run_id,
      GITHUB_RUN_ATTEMPT: github.run_attempt,
      GITHUB_REPOSITORY: github.repository,
      GITHUB_EVENT_NAME: 'push',
    },
  };
}

async function jobFor(commit: string, type: string) {
  return waitFor(async () => {
    const list = await server.request('GET', `/api/admin/jobs?commit=${commit}&type=${type}`, {
      token: server.adminToken,
    });
    return list.body.jobs[0] as { id: string; commit: string; branch: string } | undefined;
  }, 15_000);
}

/** Plays the worker: claims every task of the job, writes a log line, ends it. */
async function runJob(jobId: string, tasks: number, status: string) {
  const claimed = await agent.claimJob(jobId, tasks);
  for (const task of claimed) {
    await agent.log(task, `pytest for ${task.task_id}\n`);
    await agent.finish(
      task,
      status,
      status === 'success' ? undefined : 'tests failed',
      status === 'success' ? 0 : 1,
    );
  }
}

interface RestartingProxy {
  url: string;
  /** Status polls that failed so far. */
  failedPolls: number;
  /** Fails the next `count` status polls: the first half without a response, the rest with 502. */
  failNextPolls(count: number): void;
  close(): Promise<void>;
}

/** Starts a reverse proxy to `target` that acts out an API restart for status polls. */
async function startRestartingProxy(target: string): Promise<RestartingProxy> {
  let remaining = 0;
  let total = 0;
  const proxy: RestartingProxy = {
    url: '',
    failedPolls: 0,
    failNextPolls(count) {
      remaining = count;
      total = count;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((request, response) => {
    if (remaining > 0 && request.method === 'GET' && /^\/api\/job\/[^/?]+$/.test(request.url!)) {
      remaining -= 1;
      proxy.failedPolls += 1;
      if (remaining >= total / 2) request.socket.destroy();
      else response.writeHead(502, { 'content-type': 'text/plain' }).end('Bad Gateway');
      return;
    }
    const upstream = http.request(
      new URL(request.url!, target),
      { method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(response);
      },
    );
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

describe('example workflows', () => {
  it('ship one file per documented workflow', () => {
    const files = fs.readdirSync(EXAMPLES).filter((file) => file.endsWith('.yml'));
    expect(files.sort()).toEqual(EXPECTED_EXAMPLES);
    for (const file of files) {
      const workflow = loadWorkflow(path.join(EXAMPLES, file));
      expect(Object.keys(workflow.jobs).length).toBeGreaterThan(0);
    }
  });

  it('call only endpoints of the OpenAPI document', async () => {
    const openapi = await server.request('GET', '/api/openapi.json');
    const documented = Object.keys(openapi.body.paths as Record<string, unknown>).map(
      (template) => new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
    );
    const called = new Set<string>();
    for (const file of [...EXPECTED_EXAMPLES.map((f) => path.join(EXAMPLES, f))]) {
      const text = fs.readFileSync(file, 'utf8');
      for (const match of text.matchAll(/\$SLIPWAY_API_URL(\/api\/[^"'?\s]*)/g)) {
        called.add(match[1]!.replace(/\$[A-Z_]+/g, 'x'));
      }
    }
    const script = fs.readFileSync(path.join(REPO_ROOT, 'scripts', 'slipway-trigger.sh'), 'utf8');
    for (const match of script.matchAll(/"(\/api\/[^"?\s]*)/g)) {
      called.add(match[1]!.replace(/\$[a-z_]+/g, 'x'));
    }
    expect(called.size).toBeGreaterThan(5);
    for (const route of called) {
      expect(
        documented.some((pattern) => pattern.test(route)),
        route,
      ).toBe(true);
    }
  });
});

describe('ci.yml run steps', () => {
  it('trigger the job for the pushed commit and pass when it succeeds', async () => {
    const commit = 'e'.repeat(40);
    const context = await runnerContext(commit, 'feature/workflow');
    const run = runWorkflowJob(path.join(EXAMPLES, 'ci.yml'), 'ci', context);
    const job = await jobFor(commit, 'ci');
    expect(job.commit).toBe(commit);
    expect(job.branch).toBe('feature/workflow');
    await runJob(job.id, 2, 'success');

    const results = await run;
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    expect(results[0]!.outputs['job-id']).toBe(job.id);
    expect(results[1]!.stdout).toContain('pytest for');
    expect(results[1]!.stdout).toContain(`job ${job.id} ended success`);
    const detail = await server.request('GET', `/api/job/${job.id}`, { token: server.adminToken });
    expect(detail.body.github_run_id).toBe(context.env.GITHUB_RUN_ID);
    expect(detail.body.tasks.map((t: { name: string }) => t.name)).toEqual([
      'ci (3.11)',
      'ci (3.12)',
    ]);
  });

  it('fail the step when the job fails', async () => {
    const commit = 'f1'.repeat(20);
    const context = await runnerContext(commit, 'main');
    const run = runWorkflowJob(path.join(EXAMPLES, 'ci.yml'), 'ci', context);
    const job = await jobFor(commit, 'ci');
    await runJob(job.id, 2, 'failure');
    const results = await run;
    expect(results[0]!.code).toBe(0);
    expect(results[1]!.code).not.toBe(0);
    expect(results[1]!.stdout).toContain('ended failure');
  });
});

describe('integration-tests.yml through the composite action', () => {
  it('wait for ci, run, and expose the job outputs', async () => {
    const commit = '9'.repeat(40);
    const ci = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit, branch: 'main' },
    });
    const context = await runnerContext(commit, 'main');
    const run = runWorkflowJob(
      path.join(EXAMPLES, 'integration-tests.yml'),
      'integration-tests',
      context,
    );
    const job = await jobFor(commit, 'integration-tests');
    const waiting = await server.request('GET', `/api/job/${job.id}`, { token: server.adminToken });
    expect(waiting.body.status).toBe('waiting');
    await runJob(ci.body.job_id, 1, 'success');
    await runJob(job.id, 1, 'success');

    const results = await run;
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    expect(results[0]!.outputs).toEqual({ 'job-id': job.id, status: 'success' });
    expect(results[0]!.stdout).toContain('pytest for');
    expect(results[1]!.stdout).toContain(`job ${job.id} ended success`);
  });
});

describe('the composite action', () => {
  /** Writes a workflow whose job `build` queues ci with the action, `inputs` added to its `with`. */
  function actionWorkflow(inputs = ''): string {
    const file = path.join(makeTempDir('slipway-workflow-'), 'build.yml');
    fs.writeFileSync(
      file,
      `jobs:
  build:
    steps:
      - uses: ./
        with:
          type: ci
          api-url: \${{ vars.SLIPWAY_API_URL }}
          token: \${{ secrets.SLIPWAY_TOKEN }}${inputs}
`,
    );
    return file;
  }

  it('sends its matrix input as lists', async () => {
    const commit = 'fe'.repeat(20);
    const file = actionWorkflow(`
          wait: 'false'
          matrix: |
            python_versions=3.10, 3.11`);
    const results = await runWorkflowJob(file, 'build', await runnerContext(commit, 'main'));
    expect(results.map((result) => result.code)).toEqual([0]);
    const { id } = await jobFor(commit, 'ci');
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.inputs).toEqual({ python_versions: ['3.10', '3.11'] });
    expect(job.body.tasks).toHaveLength(2);
    await server.request('POST', `/api/job/${id}/cancel`, { token: server.adminToken });
  });

  it('cancels the job with the run', async () => {
    const commit = 'fd'.repeat(20);
    const file = actionWorkflow();
    const cancel = new AbortController();
    const context = { ...(await runnerContext(commit, 'main')), cancel: cancel.signal };
    const run = runWorkflowJob(file, 'build', context);
    const { id } = await jobFor(commit, 'ci');
    // Give the script time to set its traps and start polling.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    cancel.abort();

    const results = await run;
    expect(results.map((result) => result.code)).toEqual([5]);
    expect(results[0]!.outputs.status).toBe('cancelled');
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.status).toBe('cancelled');
    expect(job.body.reason).toBe('slipway-trigger.sh received SIGINT');
  });

  it('cancels a job whose trigger the run cancel interrupts', async () => {
    const commit = 'fa'.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    try {
      const cancel = new AbortController();
      const context = await runnerContext(commit, 'main');
      context.vars.SLIPWAY_API_URL = hold.proxy.url;
      const run = runWorkflowJob(actionWorkflow(), 'build', { ...context, cancel: cancel.signal });
      await hold.held;
      cancel.abort();
      // The runner's SIGINT arrives while the trigger response is still on its way.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      hold.release();

      const results = await run;
      expect(results.map((result) => result.code)).toEqual([5]);
      expect(results[0]!.outputs.status).toBe('cancelled');
      const { id } = await jobFor(commit, 'ci');
      expect(results[0]!.outputs['job-id']).toBe(id);
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
      expect(job.body.reason).toBe('slipway-trigger.sh received SIGINT');
    } finally {
      await hold.close();
    }
  });
});

describe('scripts/slipway-trigger.sh', () => {
  const runScript = runTriggerScript;

  it('exits 1 when the job fails', async () => {
    const commit = 'ab'.repeat(20);
    const summary = path.join(makeTempDir('slipway-summary-'), 'summary.md');
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger'),
      GITHUB_STEP_SUMMARY: summary,
    };
    const run = runScript(['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'], env);
    const job = await jobFor(commit, 'ci');
    await runJob(job.id, 1, 'failure');
    const result = await run;
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('pytest for');
    expect(result.stderr).toContain(`job ${job.id} ended failure`);
    // The same line as slipway trigger writes.
    expect(fs.readFileSync(summary, 'utf8')).toMatch(
      new RegExp(`^Slipway job \`${job.id}\` ended \\*\\*failure\\*\\*: .+\n$`),
    );
  });

  it('escapes control characters in a reason', async () => {
    const commit = 'e5'.repeat(20);
    const summary = path.join(makeTempDir('slipway-summary-'), 'summary.md');
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger'),
      GITHUB_STEP_SUMMARY: summary,
    };
    const run = runScript(['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'], env);
    const job = await jobFor(commit, 'ci');
    const forged = `slipway: job ${job.id} ended success (exit 0)`;
    // The API rejects such a reason now, but an older one stored it.
    await cancelWithStoredReason(server, job.id, `\u001b[2Jstop\r\n${forged}\u009b`);
    const result = await run;
    expect(result.code).toBe(5);
    expect(result.stderr).toContain(`\\u001b[2Jstop\\r\\n${forged}\\u009b`);
    for (const raw of ['\u001b', '\r', '\u009b']) expect(result.stderr).not.toContain(raw);
    expect(result.stderr.split('\n')).not.toContain(forged);
    const written = fs.readFileSync(summary, 'utf8');
    for (const raw of ['\u001b', '\r', '\u009b']) expect(written).not.toContain(raw);
  });

  it('rejects --cancel-on-timeout without --wait', async () => {
    const commit = 'ae'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };

    const result = await runScript(['ci', '--commit', commit, '--cancel-on-timeout'], env);

    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--cancel-on-timeout requires --wait');
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(jobs.body.jobs).toEqual([]);
  });

  it('rejects --timeout without --wait', async () => {
    const commit = 'b0'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };

    const result = await runScript(['ci', '--commit', commit, '--timeout', '60'], env);

    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--timeout requires --wait');
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(jobs.body.jobs).toEqual([]);
  });

  it('rejects --cancel-on-timeout without --timeout', async () => {
    const commit = 'b1'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };

    const run = runScript(['ci', '--commit', commit, '--wait', '--cancel-on-timeout'], env);
    // Without the check the script waits for good, so the job it queued is cancelled to end it.
    const ended = await Promise.race([
      run.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 3_000)),
    ]);
    const jobs = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    for (const job of jobs.body.jobs as Array<{ id: string }>) {
      await server.request('POST', `/api/job/${job.id}/cancel`, { token: server.adminToken });
    }
    const result = await run;

    expect(ended).toBe(true);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--cancel-on-timeout requires a --timeout above 0');
    expect(jobs.body.jobs).toEqual([]);
  });

  it("prints a task's next attempt from its start", async () => {
    const commit = 'af'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    const child = spawn(
      'bash',
      [
        path.join(REPO_ROOT, 'scripts', 'slipway-trigger.sh'),
        ...['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'],
      ],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const job = await jobFor(commit, 'ci');
    const [first] = await agent.claimJob(job.id, 1);
    const firstOutput = 'first attempt, longer than what the second attempt writes\n'.repeat(3);
    await agent.log(first!, firstOutput);
    await waitFor(async () => stdout.includes(firstOutput) || undefined, 10_000);

    // The worker hands the task back between two polls, and claims it again.
    const call = (suffix: string, body: Record<string, unknown>) =>
      server.request('POST', `/api/agent/tasks/${first!.task_id}/${suffix}`, {
        token: agent.token,
        body: { worker_id: agent.workerId, ...body },
      });
    expect((await call('release', { attempt: 1, reason: 'stopping' })).status).toBe(200);
    const [second] = await agent.claimJob(job.id, 1);
    expect(second!.attempt).toBe(2);
    const uploaded = await call('logs', { attempt: 2, offset: 0, data: 'second attempt\n' });
    expect(uploaded.status).toBe(200);
    const finished = await call('finish', {
      attempt: 2,
      status: 'success',
      exit_code: 0,
      reason: null,
      duration_ms: 5,
    });
    expect(finished.status).toBe(200);

    expect(await exited).toBe(0);
    expect(stdout).toContain('second attempt\n');
    expect(stdout.split(firstOutput).length - 1).toBe(1);
  });

  it('exits 7 after --timeout and cancels the job', async () => {
    const dir = makeTempDir();
    const summary = path.join(dir, 'summary.md');
    const outputs = path.join(dir, 'output');
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger'),
      GITHUB_STEP_SUMMARY: summary,
      GITHUB_OUTPUT: outputs,
    };
    const result = await runScript(
      ['ci', '--commit', 'cd'.repeat(20), '--wait', '--timeout', '1', '--cancel-on-timeout'],
      env,
    );
    expect(result.code).toBe(7);
    const jobId = result.stdout.trim().split('\n')[0]!;
    const reason = 'still queued after --timeout 1s; cancel requested';
    expect(result.stderr).toContain(
      `slipway: job ${jobId} ended wait_timeout: ${reason} (exit 7)\n`,
    );
    expect(fs.readFileSync(summary, 'utf8')).toBe(
      `Slipway job \`${jobId}\` ended **wait_timeout**: ${reason}\n`,
    );
    expect(fs.readFileSync(outputs, 'utf8')).toBe(`job-id=${jobId}\nstatus=wait_timeout\n`);
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('cancelled');
  });

  it.each([
    ['SIGTERM', 'ce'],
    ['SIGHUP', 'cf'],
  ] as const)('cancels the job on %s', async (signal, digits) => {
    const commit = digits.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    const child = spawn(
      'bash',
      [
        path.join(REPO_ROOT, 'scripts', 'slipway-trigger.sh'),
        ...['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'],
      ],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: 'ignore' },
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const { id } = await jobFor(commit, 'ci');
    // Give the script time to set its traps and start polling.
    await new Promise((resolve) => setTimeout(resolve, 700));
    child.kill(signal);
    expect(await exited).toBe(5);
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.status).toBe('cancelled');
    expect(job.body.reason).toContain(signal);
  });

  it('exits 9 when the cancel is rejected', async () => {
    const commit = 'c9'.repeat(20);
    const dir = makeTempDir();
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger', 'revoked-before-cancel'),
      GITHUB_OUTPUT: path.join(dir, 'output'),
      GITHUB_STEP_SUMMARY: path.join(dir, 'summary.md'),
    };
    const script = startTriggerScript(
      ['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'],
      env,
    );
    const { id } = await jobFor(commit, 'ci');
    await waitFor(() => (script.stdout().includes(id) ? true : undefined));
    // Give the script time to set its traps and start polling.
    await new Promise((resolve) => setTimeout(resolve, 700));
    await revokeToken(server.context.store.db, { name: 'revoked-before-cancel' });
    script.child.kill('SIGTERM');

    expect(await script.exited).toBe(9);
    const error = `POST /api/job/${id}/cancel failed with 401`;
    expect(script.stderr()).toContain(
      `slipway: cancelling job ${id} after SIGTERM failed, so the job may still be running: ${error}`,
    );
    expect(script.stderr()).toMatch(/ \(exit 9\)\n$/);
    expect(script.stderr()).not.toContain('cancelled because');
    expect(fs.readFileSync(env.GITHUB_OUTPUT, 'utf8')).toBe(`job-id=${id}\nstatus=cancel_failed\n`);
    expect(fs.readFileSync(env.GITHUB_STEP_SUMMARY, 'utf8')).toContain(
      `Cancelling Slipway job \`${id}\` after SIGTERM failed`,
    );
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.status).toBe('queued');
    await server.request('POST', `/api/job/${id}/cancel`, { token: server.adminToken });
  });

  it('exits 9 when the API is gone', async () => {
    const commit = 'ca'.repeat(20);
    const own = await startTestServer();
    let closed = false;
    try {
      const env = { SLIPWAY_API_URL: own.url, SLIPWAY_TOKEN: await own.token('trigger') };
      const script = startTriggerScript(
        ['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'],
        env,
      );
      await waitFor(() => (script.stdout() !== '' ? true : undefined));
      const id = script.stdout().trim();
      // Give the script time to set its traps and start polling.
      await new Promise((resolve) => setTimeout(resolve, 700));
      await own.close();
      closed = true;
      script.child.kill('SIGTERM');

      expect(await script.exited).toBe(9);
      expect(script.stderr()).toContain(
        `slipway: cancelling job ${id} after SIGTERM failed, so the job may still be running: ` +
          `cannot reach the Slipway API at ${own.url}: (7) Failed to connect`,
      );
    } finally {
      if (!closed) await own.close();
    }
  });

  it('reports a job that ended before the cancel', async () => {
    const commit = 'cb'.repeat(20);
    // The job succeeds while the cancel request is on its way to the API.
    const proxy = await startApiProxy(server.url, {
      async beforeForward(method, url) {
        if (method !== 'POST' || !url.endsWith('/cancel')) return;
        const { id } = await jobFor(commit, 'ci');
        await runJob(id, 1, 'success');
      },
    });
    try {
      const env = { SLIPWAY_API_URL: proxy.url, SLIPWAY_TOKEN: await server.token('trigger') };
      const script = startTriggerScript(
        ['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'],
        env,
      );
      const { id } = await jobFor(commit, 'ci');
      await waitFor(() => (script.stdout().includes(id) ? true : undefined));
      // Give the script time to set its traps and start polling.
      await new Promise((resolve) => setTimeout(resolve, 700));
      script.child.kill('SIGTERM');

      expect(await script.exited).toBe(0);
      expect(script.stderr()).toContain(
        `slipway: job ${id} ended success: it ended before the cancel that SIGTERM requested (exit 0)`,
      );
    } finally {
      await proxy.close();
    }
  });

  it.each([
    ['SIGTERM', ['--wait'], 'd1'],
    ['SIGINT', [], 'd2'],
  ] as const)('cancels a job triggered during %s', async (signal, extra, digits) => {
    const commit = digits.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    try {
      const env = { SLIPWAY_API_URL: hold.proxy.url, SLIPWAY_TOKEN: await server.token('trigger') };
      const script = startTriggerScript(['ci', '--commit', commit, ...extra], env);
      await hold.held;
      script.child.kill(signal);
      // The script waits for the response, so it is still running a second later.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(script.child.exitCode).toBeNull();
      hold.release();

      expect(await script.exited).toBe(5);
      const { id } = await jobFor(commit, 'ci');
      expect(script.stdout()).toBe(`${id}\n`);
      expect(script.stderr()).toContain(
        `slipway: job ${id} cancelled because the step received ${signal}`,
      );
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
      expect(job.body.reason).toBe(`slipway-trigger.sh received ${signal}`);
    } finally {
      await hold.close();
    }
  });

  it('finds a held job by its GitHub run', async () => {
    const commit = 'd3'.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    try {
      const env = {
        SLIPWAY_API_URL: hold.proxy.url,
        SLIPWAY_TOKEN: await server.token('trigger'),
        GITHUB_RUN_ID: '5150',
        GITHUB_RUN_ATTEMPT: '1',
      };
      const script = startTriggerScript(['ci', '--commit', commit, '--wait'], env);
      await hold.held;
      script.child.kill('SIGTERM');

      // The first response stays held, and the repeated request finds the job it created.
      expect(await script.exited).toBe(5);
      const { id } = await jobFor(commit, 'ci');
      expect(script.stderr()).toContain(
        'slipway: the trigger request had no response within 3s of SIGTERM; sending it again ' +
          'to find the job of GitHub run 5150\n',
      );
      expect(script.stderr()).toContain(`slipway: found ${id} for ${commit}`);
      expect(script.stderr()).toContain(`job ${id} cancelled because the step received SIGTERM`);
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
    } finally {
      await hold.close();
    }
  });

  it('finds a held job by its Idempotency-Key', async () => {
    const commit = 'd5'.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    try {
      const env = { SLIPWAY_API_URL: hold.proxy.url, SLIPWAY_TOKEN: await server.token('trigger') };
      const args = ['ci', '--commit', commit, '--idempotency-key', 'held-key-1', '--wait'];
      const script = startTriggerScript(args, env);
      await hold.held;
      script.child.kill('SIGTERM');

      expect(await script.exited).toBe(5);
      const { id } = await jobFor(commit, 'ci');
      expect(script.stderr()).toContain(
        'slipway: the trigger request had no response within 3s of SIGTERM; sending it again ' +
          'to find the job of its Idempotency-Key\n',
      );
      expect(script.stderr()).toContain(
        `slipway: found ${id} for ${commit} (status queued): an earlier trigger with ` +
          'Idempotency-Key "held-key-1" created it\n',
      );
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
    } finally {
      await hold.close();
    }
  });

  it('cancels after a signal to the process group', async () => {
    // A closing terminal, timeout(1) or systemd signals curl as well as the script.
    const commit = 'd6'.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    try {
      const env = {
        SLIPWAY_API_URL: hold.proxy.url,
        SLIPWAY_TOKEN: await server.token('trigger'),
        GITHUB_RUN_ID: '5151',
        GITHUB_RUN_ATTEMPT: '1',
      };
      const script = startTriggerScript(['ci', '--commit', commit, '--wait'], env, {
        detached: true,
      });
      await hold.held;
      process.kill(-script.child.pid!, 'SIGTERM');

      expect(await script.exited).toBe(5);
      const { id } = await jobFor(commit, 'ci');
      expect(script.stderr()).not.toContain('cannot reach the Slipway API');
      expect(script.stderr()).not.toContain('Killed');
      expect(script.stderr()).toContain(`job ${id} cancelled because the step received SIGTERM`);
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('cancelled');
    } finally {
      await hold.close();
    }
  });

  it('exits 9 when a held trigger has no run id', async () => {
    const commit = 'd4'.repeat(20);
    const hold = await holdTriggerResponses(server.url);
    const outputs = path.join(makeTempDir(), 'output');
    try {
      const env = {
        SLIPWAY_API_URL: hold.proxy.url,
        SLIPWAY_TOKEN: await server.token('trigger'),
        GITHUB_OUTPUT: outputs,
      };
      const script = startTriggerScript(['ci', '--commit', commit, '--wait'], env);
      await hold.held;
      script.child.kill('SIGTERM');

      expect(await script.exited).toBe(9);
      expect(script.stderr()).toContain(
        'slipway: the trigger request had no response within 3s of SIGTERM, so a job for ' +
          `commit ${commit} may have been queued and may run (exit 9)`,
      );
      expect(script.stdout()).toBe('');
      expect(fs.readFileSync(outputs, 'utf8')).toBe('status=cancel_failed\n');
      // The message is true: the API created the job, and nothing cancelled it.
      const { id } = await jobFor(commit, 'ci');
      const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
      expect(job.body.status).toBe('queued');
      await server.request('POST', `/api/job/${id}/cancel`, { token: server.adminToken });
    } finally {
      await hold.close();
    }
  });

  it('says when the cancel after --timeout fails', async () => {
    const commit = 'cc'.repeat(20);
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger', 'revoked-before-timeout'),
    };
    const script = startTriggerScript(
      ['ci', '--commit', commit, '--wait', '--timeout', '2', '--cancel-on-timeout'],
      env,
    );
    const { id } = await jobFor(commit, 'ci');
    await revokeToken(server.context.store.db, { name: 'revoked-before-timeout' });

    expect(await script.exited).toBe(7);
    expect(script.stderr()).toContain(
      `; cancel request failed: POST /api/job/${id}/cancel failed with 401`,
    );
    await server.request('POST', `/api/job/${id}/cancel`, { token: server.adminToken });
  });

  it('rejects --poll-interval 0 and above 300', async () => {
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    for (const interval of ['0', '0.0', '301']) {
      const result = await runScript(
        ['ci', '--commit', 'cc'.repeat(20), '--wait', '--poll-interval', interval],
        env,
      );
      expect(result.code, interval).toBe(2);
      expect(result.stderr).toContain(
        `--poll-interval must be more than 0 and at most 300 seconds, got ${interval}`,
      );
      expect(result.stdout).toBe('');
    }
  });

  it('prints why a job waits, once', async () => {
    const commit = 'ce'.repeat(20);
    const ci = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    expect(ci.status).toBe(201);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    const result = await runScript(
      [
        'integration-tests',
        '--commit',
        commit,
        '--wait',
        '--timeout',
        '1',
        '--poll-interval',
        '0.2',
      ],
      env,
    );
    expect(result.code).toBe(7);
    const jobId = result.stdout.trim().split('\n')[0]!;
    const line = `slipway: job ${jobId} is waiting: waiting for ci of ${commit.slice(0, 7)}\n`;
    expect(result.stderr).toContain(line);
    expect(result.stderr.split(line)).toHaveLength(2);
    await server.request('POST', `/api/job/${ci.body.job_id}/cancel`, {
      token: server.adminToken,
    });
  });

  it('finds the job of a repeated Idempotency-Key', async () => {
    const commit = 'c9'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    const args = ['ci', '--commit', commit, '--idempotency-key', 'deploy-42'];
    const first = await runScript(args, env);
    const second = await runScript(args, env);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    const jobId = first.stdout.trim();
    expect(second.stdout.trim()).toBe(jobId);
    expect(second.stderr).toBe(
      `slipway: found ${jobId} for ${commit} (status queued): an earlier trigger with ` +
        'Idempotency-Key "deploy-42" created it\n',
    );
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('rejects an Idempotency-Key with a line break', async () => {
    const commit = 'ca'.repeat(20);
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    for (const key of ['a\r\nX-Injected: 1', 'two words', '', 'k'.repeat(256)]) {
      const result = await runScript(['ci', '--commit', commit, '--idempotency-key', key], env);
      expect(result.code, key).toBe(2);
      expect(result.stderr).toContain(
        '--idempotency-key needs 1 to 255 printable ASCII characters without spaces',
      );
    }
    const list = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    expect(list.body.jobs).toEqual([]);
  });

  it('finds the job of a re-run step', async () => {
    const commit = 'c8'.repeat(20);
    const env = {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: await server.token('trigger'),
      GITHUB_RUN_ID: '4242',
      GITHUB_RUN_ATTEMPT: '2',
    };
    const first = await runScript(['ci', '--commit', commit], env);
    const second = await runScript(['ci', '--commit', commit], env);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    const jobId = first.stdout.trim();
    expect(second.stdout.trim()).toBe(jobId);
    expect(first.stderr).toBe(`slipway: triggered ${jobId} for ${commit} (status queued)\n`);
    // The same line as slipway trigger writes.
    expect(second.stderr).toBe(
      `slipway: found ${jobId} for ${commit} (status queued): an earlier trigger with ` +
        'GitHub run 4242 attempt 2 created it\n',
    );
    await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
  });

  it('rejects a repeated --param key', async () => {
    const result = await runScript(
      ['ci', '--commit', 'fd'.repeat(20), '--param', 'a=1', '--param', 'a=2'],
      { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') },
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--param key "a" is repeated');
    expect(result.stdout).toBe('');
  });

  it('sends --matrix values as a list', async () => {
    const commit = 'fc'.repeat(20);
    const result = await runScript(
      ['ci', '--commit', commit, '--matrix', 'python_versions=3.11, 3.12'],
      { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') },
    );
    expect(result.code, result.stderr).toBe(0);
    const { id } = await jobFor(commit, 'ci');
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.inputs).toEqual({ python_versions: ['3.11', '3.12'] });
    expect(job.body.tasks).toHaveLength(2);
    await server.request('POST', `/api/job/${id}/cancel`, { token: server.adminToken });
  });

  it('rejects a bad --matrix field', async () => {
    const env = { SLIPWAY_API_URL: server.url, SLIPWAY_TOKEN: await server.token('trigger') };
    const cases: Array<[string[], string]> = [
      [['--matrix', 'branch=main'], '--matrix field "branch" is no matrix field'],
      [['--matrix', 'a=1', '--matrix', 'a=2'], '--matrix field "a" is repeated'],
      [['--matrix', 'a=,'], '--matrix a needs at least one value'],
      [['--matrix', '=1'], '--matrix needs FIELD=VALUE,VALUE...'],
      [
        ['--python-versions', '3.12', '--matrix', 'python_versions=3.11'],
        'both set python_versions',
      ],
    ];
    for (const [args, message] of cases) {
      const result = await runScript(['ci', '--commit', 'fb'.repeat(20), ...args], env);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain(message);
      expect(result.stdout).toBe('');
    }
  });

  it('hides credentials in the API URL', async () => {
    const result = await runScript(['ci', '--commit', 'fe'.repeat(20)], {
      SLIPWAY_API_URL: 'http://user:s3cret-pw@127.0.0.1:1',
      SLIPWAY_TOKEN: 'slw_unused',
    });
    expect(result.code).toBe(8);
    expect(result.stderr).toContain('cannot reach the Slipway API at http://***@127.0.0.1:1');
    expect(result.stderr).not.toContain('s3cret-pw');
  });

  it('exits 8 when the token is rejected', async () => {
    const result = await runScript(['ci', '--commit', 'ef'.repeat(20)], {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_TOKEN: 'slw_wrong',
    });
    expect(result.code).toBe(8);
    expect(result.stderr).toContain('401');
  });

  it('keeps polling while the API restarts', async () => {
    const commit = 'c7'.repeat(20);
    const proxy = await startRestartingProxy(server.url);
    try {
      const env = { SLIPWAY_API_URL: proxy.url, SLIPWAY_TOKEN: await server.token('trigger') };
      const run = runScript(['ci', '--commit', commit, '--wait', '--poll-interval', '0.2'], env);
      let ended = false;
      void run.then(() => (ended = true));
      const { id } = await jobFor(commit, 'ci');
      proxy.failNextPolls(4);
      await waitFor(() => (proxy.failedPolls === 4 || ended ? true : undefined));
      await runJob(id, 1, 'success');

      const result = await run;
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toContain('cannot reach the Slipway API');
      expect(result.stderr).toContain('failed with 502');
      expect(result.stderr).toContain('retrying (failed poll 4 of at most 30)');
    } finally {
      await proxy.close();
    }
  });
});

describe('ci.yml with a real worker', () => {
  it('runs the job to the end with the local executor', async () => {
    const repo = makeRepository({ 'tests.txt': 'all tests pass\n' });
    const pipelines = writePipelineFile(`
repository: ${repo.dir}
pipelines:
  ci:
    executor: local
    matrix:
      python_version: { from: python_versions, default: ['3.12'] }
    steps:
      - name: test
        run: cat tests.txt; echo "tested $SLIPWAY_COMMIT on $SLIPWAY_BRANCH with python $PYTHON_VERSION"
`);
    const harness = await startHarness({ SLIPWAY_PIPELINES: pipelines });
    try {
      const previous = server;
      server = harness.server;
      try {
        const context = await runnerContext(repo.commit, 'main');
        const results = await runWorkflowJob(path.join(EXAMPLES, 'ci.yml'), 'ci', context);
        expect(results.map((r) => r.code)).toEqual([0, 0]);
        const output = results[1]!.stdout;
        expect(output).toContain('all tests pass');
        expect(output).toContain(`tested ${repo.commit} on main with python 3.11`);
        expect(output).toContain(`tested ${repo.commit} on main with python 3.12`);
        expect(output).toContain('ended success');
      } finally {
        server = previous;
      }
    } finally {
      await harness.close();
    }
  });
});
