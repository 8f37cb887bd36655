/**
 * Durability soak. Runs `slipway api`, `slipway orchestrator` and two `slipway worker` processes
 * on a fresh data directory, triggers a commit's ci -> integration-tests -> deploy chain every
 * `--interval` milliseconds, and meanwhile kills a random process (SIGKILL, or SIGTERM for a
 * worker) or a running task container (`docker kill`) every 8 to 16 s, restarting the process
 * after up to 3 s. When `--seconds` have passed, it waits for every job to end and checks:
 *
 *   - every job for which a trigger got 200 or 201 exists, ended, and has a `job_triggered`
 *     audit row;
 *   - every task that a worker claimed has a log that ends with a `[slipway]` line, and each
 *     successful ci task's log has all 150 lines that its step printed;
 *   - no deploy task started twice, and no two deploys ran at once (their concurrency group);
 *   - no container and no step process is left after the processes stopped.
 *
 * It prints each problem found, the jobs by type and status, the audit actions and the chaos
 * actions taken, and exits 1 when it found a problem. Triggers sent while the API is down are
 * retried with the same Idempotency-Key, as a client that got no response would.
 *
 * Needs `npm run build`, a Docker engine and the image slipway-test-busybox
 * (`bash scripts/build-test-images.sh`).
 *
 * Usage: npx tsx bench/chaos/soak.ts [--seconds 480] [--api-workers 1] [--port 5601]
 *        [--interval 1200] [--keep]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
  options: {
    seconds: { type: 'string', default: '480' },
    'api-workers': { type: 'string', default: '1' },
    port: { type: 'string', default: '5601' },
    interval: { type: 'string', default: '1200' },
    keep: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(options.seconds);
const PORT = Number(options.port);
const INTERVAL_MS = Number(options.interval);
const BASE = `http://127.0.0.1:${PORT}`;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const ADMIN_TOKEN = `slw_soak-admin-${randomBytes(16).toString('hex')}`;
const CI_LINES = 150;
const TERMINAL = new Set(['success', 'failure', 'error', 'timed_out', 'cancelled', 'skipped']);

if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-soak-'));
const ledger = path.join(dataDir, 'deploy-ledger');
const pipelinesFile = path.join(dataDir, 'slipway.yml');
fs.writeFileSync(pipelinesFile, pipelineFile(ledger));

const baseEnv: NodeJS.ProcessEnv = {
  ...process.env,
  SLIPWAY_DATA_DIR: dataDir,
  SLIPWAY_PIPELINES: pipelinesFile,
  API_PORT: String(PORT),
  API_RATE_LIMIT: '0',
  SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
  SLIPWAY_LEASE_SECONDS: '10',
  ORCHESTRATION_INTERVAL: '20',
  LOG_LEVEL: 'info',
};

/** Returns the pipeline file: ci runs locally, integration-tests in Docker, deploy locally. */
function pipelineFile(ledgerPath: string): string {
  return `pipelines:
  ci:
    executor: local
    matrix:
      shard: [a, b]
    steps:
      - name: count
        run: |
          i=0
          while [ $i -lt ${CI_LINES} ]; do echo "line $i $SLIPWAY_JOB_ID $SHARD"; i=$((i+1)); sleep 0.01; done
      - name: done
        run: echo "ci-done $SLIPWAY_JOB_ID $SHARD"
    timeout: 2m
    retries: 2
    concurrency: { group: branch, cancel_in_progress: true }
  integration-tests:
    needs: [ci]
    executor: docker
    image: slipway-test-busybox
    steps:
      - name: integration
        run: |
          i=0
          while [ $i -lt 40 ]; do echo "integration $i"; i=$((i+1)); sleep 0.02; done
    timeout: 2m
    retries: 2
  deploy:
    needs: [integration-tests]
    executor: local
    env:
      LEDGER: ${JSON.stringify(ledgerPath)}
    steps:
      - name: deploy
        run: |
          echo "start $SLIPWAY_TASK_ID $SLIPWAY_JOB_ID $(date +%s%N)" >> "$LEDGER"
          sleep 1
          echo "end $SLIPWAY_TASK_ID $SLIPWAY_JOB_ID $(date +%s%N)" >> "$LEDGER"
    timeout: 1m
    concurrency: { group: deploy, cancel_in_progress: false }
health_checks: []
`;
}

function runCli(args: string[]): string {
  return execFileSync('node', [CLI, ...args], { env: baseEnv, encoding: 'utf8' });
}

runCli(['init-db']);
const dbPath = path.join(dataDir, 'state', 'orchestration.db');
const instance = sqlite('SELECT id FROM installation').trim();
const created = JSON.parse(
  runCli(['token', 'create', '--name', 'soak-agent', '--role', 'agent', '--json']),
) as { token: string };
const workerEnv = {
  SLIPWAY_API_URL: BASE,
  SLIPWAY_AGENT_TOKEN: created.token,
  SLIPWAY_WORKER_CAPACITY: '2',
};
const roles: Record<string, { args: string[]; env: Record<string, string> }> = {
  api: { args: ['api'], env: { API_WORKERS: options['api-workers'] } },
  orchestrator: { args: ['orchestrator'], env: {} },
  w1: { args: ['worker'], env: workerEnv },
  w2: { args: ['worker'], env: workerEnv },
};

function sqlite(query: string): string {
  return execFileSync('sqlite3', [dbPath, query], { encoding: 'utf8' });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function log(message: string): void {
  console.log(`${new Date().toISOString()} ${message}`);
}

// Processes by role, and what the chaos loop did.
const processes = new Map<string, ChildProcess>();
const chaosActions = new Map<string, number>();
const problems: string[] = [];

function start(role: string): void {
  const output = fs.openSync(path.join(dataDir, `${role}.log`), 'a');
  const child = spawn('node', [CLI, ...roles[role]!.args], {
    env: { ...baseEnv, ...roles[role]!.env },
    stdio: ['ignore', output, output],
  });
  fs.closeSync(output);
  processes.set(role, child);
  child.on('exit', () => {
    if (processes.get(role) === child) processes.delete(role);
  });
}

interface HttpResult {
  status: number;
  text: string;
}

async function request(method: string, route: string, body?: unknown, key?: string) {
  const headers: Record<string, string> = { authorization: `Bearer ${ADMIN_TOKEN}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (key !== undefined) headers['idempotency-key'] = key;
  const response = await fetch(BASE + route, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: response.status, text: await response.text() } satisfies HttpResult;
}

// Ids of the jobs for which a trigger got 200 or 201.
const promised: string[] = [];

/** Sends one trigger until the API responds, as a client whose request timed out would. */
async function trigger(type: string, commit: string, branch: string): Promise<void> {
  const key = randomUUID();
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      const result = await request('POST', `/api/trigger/${type}`, { commit, branch }, key);
      if (result.status === 200 || result.status === 201) {
        promised.push((JSON.parse(result.text) as { job_id: string }).job_id);
        return;
      }
      if (result.status !== 408 && result.status !== 429 && result.status < 500) {
        problems.push(`trigger ${type} ${commit}: ${result.status} ${result.text}`);
        return;
      }
    } catch {
      // The API is down or restarting: send the same request again.
    }
    await sleep(300);
  }
  problems.push(`trigger ${type} ${commit}: no response after 200 attempts`);
}

let stopping = false;

async function triggerLoop(): Promise<void> {
  for (let round = 1; !stopping; round++) {
    const commit = randomBytes(20).toString('hex');
    const branch = `soak-${round % 4}`;
    await trigger('ci', commit, branch);
    await trigger('integration-tests', commit, branch);
    if (round % 2 === 0) await trigger('deploy', commit, branch);
    await sleep(INTERVAL_MS);
  }
}

function runningContainers(all = false): string[] {
  const filter = `label=slipway.instance=${instance}`;
  const args = ['ps', '-q', ...(all ? ['-a'] : []), '--filter', filter];
  return execFileSync('docker', args, { encoding: 'utf8' }).split('\n').filter(Boolean);
}

async function chaosLoop(): Promise<void> {
  const actions = ['kill api', 'kill worker', 'term worker', 'kill orchestrator', 'kill container'];
  while (!stopping) {
    await sleep(8_000 + Math.random() * 8_000);
    if (stopping) return;
    const action = actions[Math.floor(Math.random() * actions.length)]!;
    if (action === 'kill container') {
      const containers = runningContainers();
      if (containers.length === 0) continue;
      const id = containers[Math.floor(Math.random() * containers.length)]!;
      try {
        execFileSync('docker', ['kill', id], { stdio: 'ignore' });
      } catch {
        // The container exited between the listing and the kill.
        continue;
      }
      chaosActions.set(action, (chaosActions.get(action) ?? 0) + 1);
      log(`docker kill ${id}`);
      continue;
    }
    const [how, what] = action.split(' ') as [string, string];
    let role = what;
    if (what === 'worker') role = Math.random() < 0.5 ? 'w1' : 'w2';
    const child = processes.get(role);
    if (child === undefined) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(how === 'kill' ? 'SIGKILL' : 'SIGTERM');
    await exited;
    chaosActions.set(action, (chaosActions.get(action) ?? 0) + 1);
    log(`${how} ${role} (pid ${child.pid})`);
    await sleep(500 + Math.random() * 2_500);
    start(role);
  }
}

interface JobView {
  id: string;
  type: string;
  status: string;
  tasks: Array<{ id: string; status: string; attempt: number }>;
}

/** Waits up to four minutes for every promised job to end, and returns the ended jobs. */
async function waitForJobs(): Promise<Map<string, JobView>> {
  const ended = new Map<string, JobView>();
  const deadline = Date.now() + 240_000;
  while (Date.now() < deadline) {
    for (const id of promised) {
      if (ended.has(id)) continue;
      const result = await request('GET', `/api/job/${id}`);
      if (result.status !== 200) continue;
      const job = JSON.parse(result.text) as JobView;
      if (TERMINAL.has(job.status)) ended.set(id, job);
    }
    if (ended.size === promised.length) break;
    log(`${promised.length - ended.size} jobs have not ended`);
    await sleep(5_000);
  }
  for (const id of promised) {
    if (ended.has(id)) continue;
    const result = await request('GET', `/api/job/${id}`);
    problems.push(`job ${id} did not end: ${result.status} ${result.text.slice(0, 400)}`);
  }
  return ended;
}

/** Checks the logs of every task that a worker claimed. Returns the lines that closed them. */
async function checkLogs(jobs: Map<string, JobView>): Promise<Map<string, number>> {
  const closing = new Map<string, number>();
  for (const job of jobs.values()) {
    for (const task of job.tasks) {
      if (task.attempt === 0) continue;
      const route = `/api/job/${job.id}/logs?task=${encodeURIComponent(task.id)}`;
      const text = (await request('GET', route)).text;
      const lines = text.trimEnd().split('\n');
      const last = lines[lines.length - 1] ?? '';
      if (!last.startsWith('[slipway] ')) {
        problems.push(`task ${task.id} (${task.status}): log ends with ${JSON.stringify(last)}`);
      }
      // Ids, times and worker names vary, so they are masked to count the kinds of lines.
      const kind = `${task.status}: ${last}`
        .replace(/[0-9a-f]{8}(\.\d+\.\d+)?/g, 'ID')
        .replace(/\d+(\.\d+)? s\b/g, 'N s')
        .replace(/vm-\S+|[\w.-]+-\d+-[0-9a-f]{4}\b/g, 'WORKER')
        .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME');
      closing.set(kind, (closing.get(kind) ?? 0) + 1);
      if (job.type !== 'ci' || task.status !== 'success') continue;
      for (let i = 0; i < CI_LINES; i++) {
        if (!text.includes(`line ${i} ${job.id} `)) {
          problems.push(`task ${task.id} succeeded, but its log lacks "line ${i}"`);
          break;
        }
      }
    }
  }
  return closing;
}

/** Checks that no deploy task started twice and that no two deploys overlapped. */
function checkDeploys(): number {
  if (!fs.existsSync(ledger)) return 0;
  const spans = new Map<string, { start: bigint; end?: bigint }>();
  for (const line of fs.readFileSync(ledger, 'utf8').trim().split('\n')) {
    const [event, task, , time] = line.split(' ') as [string, string, string, string];
    if (event === 'start') {
      if (spans.has(task)) problems.push(`deploy task ${task} started twice`);
      spans.set(task, { start: BigInt(time) });
    } else {
      const span = spans.get(task);
      if (span !== undefined) span.end = BigInt(time);
    }
  }
  const ordered = [...spans.entries()].sort(([, a], [, b]) => (a.start < b.start ? -1 : 1));
  for (let i = 1; i < ordered.length; i++) {
    const [previousTask, previous] = ordered[i - 1]!;
    const [task, span] = ordered[i]!;
    // A deploy whose worker was killed wrote no end line, so an overlap with the next deploy
    // cannot be seen here.
    if (previous.end !== undefined && span.start < previous.end) {
      problems.push(`deploys ${previousTask} and ${task} overlapped`);
    }
  }
  return spans.size;
}

function checkAudit(): string {
  const audited = new Set(
    sqlite("SELECT DISTINCT job_id FROM audit_log WHERE action = 'job_triggered'").split('\n'),
  );
  for (const id of promised) {
    if (!audited.has(id)) problems.push(`job ${id} has no job_triggered audit row`);
  }
  return sqlite('SELECT action, count(*) FROM audit_log GROUP BY action ORDER BY action');
}

async function stopAll(): Promise<void> {
  const exits = [...processes.values()].map(
    (child) => new Promise((resolve) => child.once('exit', resolve)),
  );
  for (const child of processes.values()) child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise((resolve) => (timer = setTimeout(resolve, 30_000)));
  await Promise.race([Promise.all(exits), timeout]);
  clearTimeout(timer);
  const containers = runningContainers(true);
  if (containers.length > 0) problems.push(`containers left: ${containers.join(' ')}`);
  let steps = '';
  try {
    steps = execFileSync('pgrep', ['-af', '[$]SHARD|[$]LEDGER'], { encoding: 'utf8' }).trim();
  } catch {
    // pgrep exits 1 when nothing matches.
  }
  if (steps !== '') problems.push(`step processes left: ${steps}`);
}

log(`data directory ${dataDir}`);
for (const role of Object.keys(roles)) start(role);
for (let i = 0; i < 120; i++) {
  const result = await request('GET', '/api/health/status').catch(() => undefined);
  if (result !== undefined) break;
  await sleep(250);
}
// Kills the processes that are still running when the script exits early, such as on a bug.
process.on('exit', () => {
  for (const child of processes.values()) child.kill('SIGKILL');
});
// Ctrl-C or a kill of the script ends it through process.exit, so the handler above runs.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]));
}
const loops = [triggerLoop(), chaosLoop()].map((loop) =>
  loop.catch((error: unknown) => {
    problems.push(`the soak script failed: ${String(error)}`);
    stopping = true;
  }),
);
const soakEnd = Date.now() + SECONDS * 1000;
while (Date.now() < soakEnd && !stopping) await sleep(1_000);
stopping = true;
await Promise.all(loops);
log(`soak over: ${promised.length} jobs promised; waiting for them to end`);

const jobs = await waitForJobs();
const closing = await checkLogs(jobs);
const deploys = checkDeploys();
const auditActions = checkAudit();
await stopAll();

const statuses = new Map<string, number>();
for (const job of jobs.values()) {
  const key = `${job.type} ${job.status}`;
  statuses.set(key, (statuses.get(key) ?? 0) + 1);
}
console.log(`\njobs promised ${promised.length}, ended ${jobs.size}, deploy tasks ${deploys}`);
console.log('\njobs by type and status');
for (const [key, count] of [...statuses].sort()) console.log(`  ${count}\t${key}`);
console.log('\nchaos actions');
for (const [action, count] of [...chaosActions].sort()) console.log(`  ${count}\t${action}`);
console.log('\nlast log lines of claimed tasks');
for (const [kind, count] of [...closing].sort((a, b) => b[1] - a[1])) {
  console.log(`  ${count}\t${kind}`);
}
console.log(`\naudit actions\n${auditActions}`);
console.log(`${problems.length} problems`);
for (const problem of problems) console.log(`  ${problem}`);
if (!options.keep) fs.rmSync(dataDir, { recursive: true, force: true });
process.exitCode = problems.length === 0 ? 0 : 1;
