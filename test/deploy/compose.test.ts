/**
 * The compose stack on the real Docker engine, driven by the commands of docs/setup.md. The
 * test builds both Dockerfile targets and brings the stack up. It runs a job through the
 * published port, restarts the whole stack and checks that the job, its logs and its audit
 * trail survived. Then it removes everything it created.
 *
 * The base image node:20-bookworm-slim is the local stand-in of scripts/build-base-image.sh,
 * because no registry is reachable here. Building both targets from an empty cache took 2.5 to
 * 15 minutes on this project's two-core machines, depending on their load. The test removes
 * the untagged build-stage images it leaves (see ComposeProject.remove), about 1 GB a run that
 * later runs did not reuse, so each run builds from an empty cache.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComposeProject, freePort, REPO_ROOT } from '../support/compose.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { LABEL_JOB, LABEL_MANAGED } from '../../src/jobs/labels.js';

const BASE_IMAGE = 'node:20-bookworm-slim';
const BUILD_TIMEOUT_MS = 25 * 60_000;
const STACK_TIMEOUT_MS = 180_000;
const JOB_TIMEOUT_MS = 120_000;
const ADMIN_TOKEN = 'slw_compose-test-admin-000000000000000';
const AGENT_TOKEN = 'slw_compose-test-agent-000000000000000';
const MARKER = 'slipway-compose-marker';
const TERMINAL = ['success', 'failure', 'error', 'timed_out', 'cancelled', 'skipped'];

/** A job type whose one step writes into the workspace and reads it back in a container. */
const PIPELINES = `
pipelines:
  smoke:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    steps:
      - name: write
        run: echo "$SLIPWAY_COMMIT" > commit.txt
      - name: read
        run: echo "${MARKER} $(cat commit.txt) job $SLIPWAY_JOB_ID"
    timeout: 2m
`;

const project = new ComposeProject();
const tag = project.name;
const apiImage = `slipway-compose-test/orchestration-api:${tag}`;
const workerImage = `slipway-compose-test/orchestration-worker:${tag}`;
/** The host's trusted roots, copied into the build context for the build stage's npm ci. */
const buildCa = path.join(REPO_ROOT, 'docker', 'ca-certificates', `${tag}.crt`);
// Tests read several JSON shapes; typing each one would not catch more bugs.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let docker: Docker;
/** Jobs this file triggered, to find their task containers if a failure left any. */
const jobIds: string[] = [];
let baseUrl: string;

async function api(
  method: string,
  urlPath: string,
  body?: unknown,
  token = ADMIN_TOKEN,
): Promise<{ status: number; text: string; json: Json }> {
  const response = await fetch(`${baseUrl}${urlPath}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, text, json };
}

async function waitForJob(jobId: string): Promise<Json> {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  let job: Json;
  while (Date.now() < deadline) {
    job = (await api('GET', `/api/job/${jobId}`)).json;
    if (TERMINAL.includes(job?.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const logs = await project.compose(['logs', '--no-color', '--tail', '80']).catch(String);
  throw new Error(`job ${jobId} did not finish: ${JSON.stringify(job)}\n${logs}`);
}

function hostCaBundle(): string | undefined {
  const candidates = [process.env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'];
  return candidates.find((file) => file !== undefined && fs.existsSync(file));
}

beforeAll(async () => {
  docker = await requireDocker();
  execFileSync('bash', [path.join(REPO_ROOT, 'scripts/build-base-image.sh'), BASE_IMAGE], {
    stdio: 'inherit',
  });
  const workerDir = path.join(project.dir, 'worker');
  fs.mkdirSync(workerDir, { mode: 0o755 });
  // The worker runs as the image's node user (uid 1000) and writes here.
  fs.chownSync(workerDir, 1000, 1000);
  fs.writeFileSync(path.join(project.dir, 'slipway.yml'), PIPELINES);
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  project.writeEnv({
    DOCKER_GID: String(fs.statSync('/var/run/docker.sock').gid),
    API_BIND_ADDRESS: '127.0.0.1',
    API_PUBLISHED_PORT: String(port),
    SLIPWAY_API_IMAGE: apiImage,
    SLIPWAY_WORKER_IMAGE: workerImage,
    SLIPWAY_WORKER_DIR: workerDir,
    SLIPWAY_PIPELINES_FILE: path.join(project.dir, 'slipway.yml'),
    SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
    SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
    SLIPWAY_WORKER_NAME: `${tag}-worker`,
    LOG_LEVEL: 'info',
  });
}, BUILD_TIMEOUT_MS);

afterAll(async () => {
  fs.rmSync(buildCa, { force: true });
  await project.remove([apiImage, workerImage]);
  // The worker removes task containers itself, so this only catches what a failure left.
  const leftovers = [
    ...(await docker.listContainers({
      all: true,
      filters: { label: [`com.docker.compose.project=${project.name}`] },
    })),
    ...(await docker.listContainers({ all: true, filters: { label: [LABEL_MANAGED] } })).filter(
      (info) => jobIds.includes(info.Labels[LABEL_JOB] ?? ''),
    ),
  ];
  for (const info of leftovers) await docker.getContainer(info.Id).remove({ force: true });
}, 120_000);

describe('compose stack', () => {
  let jobId: string;
  let auditIds: number[];

  it(
    'builds both targets',
    async () => {
      const ca = hostCaBundle();
      if (ca !== undefined) fs.copyFileSync(ca, buildCa);
      try {
        await project.compose(['build'], BUILD_TIMEOUT_MS);
      } finally {
        fs.rmSync(buildCa, { force: true });
      }
      for (const image of [apiImage, workerImage]) {
        const info = await docker.getImage(image).inspect();
        expect(info.Config.User).toBe('node');
        expect(info.Config.Entrypoint?.[0]).toBe('/usr/bin/tini');
        expect(info.Config.Healthcheck?.Test).toContain('/app/dist/cli/healthcheck.js');
      }
      const apiVolumes = (await docker.getImage(apiImage).inspect()).Config.Volumes ?? {};
      expect(Object.keys(apiVolumes).sort()).toEqual([
        '/var/lib/slipway/artifacts',
        '/var/lib/slipway/backups',
        '/var/lib/slipway/logs',
        '/var/lib/slipway/state',
      ]);
      const workerVolumes = (await docker.getImage(workerImage).inspect()).Config.Volumes ?? {};
      expect(Object.keys(workerVolumes)).toEqual([]);
    },
    BUILD_TIMEOUT_MS,
  );

  it(
    'starts healthy on loopback only',
    async () => {
      await project.compose(['up', '-d'], STACK_TIMEOUT_MS);
      await project.waitHealthy('api', STACK_TIMEOUT_MS);

      const apiId = await project.containerId('api');
      const info = await docker.getContainer(apiId!).inspect();
      const bindings = info.HostConfig.PortBindings?.['5000/tcp'] ?? [];
      expect(bindings.map((binding: { HostIp: string }) => binding.HostIp)).toEqual(['127.0.0.1']);
      expect(info.Config.User).toBe('node');

      // Every volume is one of the project's named volumes: no anonymous volume is left behind.
      const containers = await docker.listContainers({
        all: true,
        filters: { label: [`com.docker.compose.project=${project.name}`] },
      });
      expect(containers).toHaveLength(5);
      for (const container of containers) {
        for (const mount of container.Mounts.filter((item) => item.Type === 'volume')) {
          expect(mount.Name).toMatch(new RegExp(`^${project.name}_`));
        }
      }

      // The health monitor's first run may come before the worker has registered. The
      // workers check then runs again within 15 s.
      const deadline = Date.now() + 30_000;
      let health = await api('GET', '/api/health/status');
      while (health.status !== 200 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        health = await api('GET', '/api/health/status');
      }
      // The body names the component that is not healthy.
      expect(health.status, health.text).toBe(200);
      const init = await docker.getContainer((await project.containerId('database-init'))!);
      expect((await init.inspect()).State.ExitCode).toBe(0);

      // Only the api has the admin token, and of the roles only the worker has the agent token.
      const envOf = async (service: string) => {
        const id = await project.containerId(service);
        const env = (await docker.getContainer(id!).inspect()).Config.Env ?? [];
        return new Map(
          env.map((entry) => [entry.split('=')[0]!, entry.slice(entry.indexOf('=') + 1)]),
        );
      };
      expect((await envOf('api')).get('SLIPWAY_ADMIN_TOKEN')).toBe(ADMIN_TOKEN);
      const worker = await envOf('worker');
      expect(worker.get('SLIPWAY_AGENT_TOKEN')).toBe(AGENT_TOKEN);
      expect(worker.get('SLIPWAY_ADMIN_TOKEN') ?? '').toBe('');
      for (const service of ['orchestrator', 'health-monitor']) {
        const env = await envOf(service);
        expect(env.get('SLIPWAY_ADMIN_TOKEN') ?? '', service).toBe('');
        expect(env.get('SLIPWAY_AGENT_TOKEN') ?? '', service).toBe('');
      }
    },
    STACK_TIMEOUT_MS + 30_000,
  );

  it(
    'runs a job through the published port',
    async () => {
      const trigger = await api('POST', '/api/trigger/smoke', {
        commit: 'abc1234',
        branch: 'main',
      });
      expect(trigger.status).toBe(201);
      jobId = trigger.json.job_id;
      jobIds.push(jobId);

      const job = await waitForJob(jobId);
      expect(job.status).toBe('success');
      const logs = await api('GET', `/api/job/${jobId}/logs`);
      expect(logs.status).toBe(200);
      expect(logs.text).toContain(`${MARKER} abc1234 job ${jobId}`);

      const audit = await api('GET', `/api/admin/audit-log?job_id=${jobId}&limit=100`);
      expect(audit.status).toBe(200);
      const entries: { id: number; action: string }[] = audit.json.entries ?? audit.json;
      expect(entries.length).toBeGreaterThan(0);
      auditIds = entries.map((entry) => entry.id).sort((a, b) => a - b);
    },
    JOB_TIMEOUT_MS + 30_000,
  );

  it(
    'keeps job, logs and audit log across a restart',
    async () => {
      expect(jobId).toBeDefined();
      await project.compose(['down', '--timeout', '30'], STACK_TIMEOUT_MS);
      expect(await project.containerId('api')).toBeUndefined();
      await project.compose(['up', '-d'], STACK_TIMEOUT_MS);
      await project.waitHealthy('api', STACK_TIMEOUT_MS);

      const job = await api('GET', `/api/job/${jobId}`);
      expect(job.status).toBe(200);
      expect(job.json.status).toBe('success');
      const logs = await api('GET', `/api/job/${jobId}/logs`);
      expect(logs.text).toContain(`${MARKER} abc1234 job ${jobId}`);
      const audit = await api('GET', `/api/admin/audit-log?job_id=${jobId}&limit=100`);
      const entries: { id: number }[] = audit.json.entries ?? audit.json;
      const ids = entries.map((entry) => entry.id).sort((a, b) => a - b);
      expect(ids).toEqual(expect.arrayContaining(auditIds));
    },
    2 * STACK_TIMEOUT_MS,
  );

  // The setup guide's token, backup and restore commands; `exec -T` because no TTY is attached.
  it(
    'creates tokens, backs up and restores',
    async () => {
      const created = await project.compose([
        'exec',
        '-T',
        'api',
        'slipway',
        'token',
        'create',
        '--name',
        'compose-reader',
        '--role',
        'read',
      ]);
      const readToken = created.split('\n').find((line) => line.startsWith('slw_'));
      expect(readToken).toBeDefined();
      expect((await api('GET', `/api/job/${jobId}`, undefined, readToken)).status).toBe(200);

      const backup = await project.compose(['exec', '-T', 'orchestrator', 'slipway', 'backup']);
      const backupLine = backup.split('\n').find((line) => line.startsWith('{'));
      const backupPath: string = JSON.parse(backupLine ?? '{}').path;
      expect(backupPath).toMatch(/^\/var\/lib\/slipway\/backups\//);

      const later = await api('POST', '/api/trigger/smoke', { commit: 'def5678', branch: 'main' });
      expect(later.status).toBe(201);
      jobIds.push(later.json.job_id);
      expect((await waitForJob(later.json.job_id)).status).toBe('success');

      await project.compose(
        ['stop', 'api', 'orchestrator', 'health-monitor', 'worker'],
        STACK_TIMEOUT_MS,
      );
      const restored = await project.compose(
        ['run', '--rm', '--no-deps', 'orchestrator', 'restore', backupPath],
        STACK_TIMEOUT_MS,
      );
      expect(restored).toContain('"restored"');
      await project.compose(['up', '-d'], STACK_TIMEOUT_MS);
      await project.waitHealthy('api', STACK_TIMEOUT_MS);

      expect((await api('GET', `/api/job/${jobId}`)).json.status).toBe('success');
      // The later job was created after the backup, so the restored database has no trace of it.
      expect((await api('GET', `/api/job/${later.json.job_id}`)).status).toBe(404);
    },
    3 * STACK_TIMEOUT_MS + JOB_TIMEOUT_MS,
  );

  it(
    'takes the stack down with its volumes',
    async () => {
      await project.compose(['down', '--volumes', '--timeout', '30'], STACK_TIMEOUT_MS);
      const containers = await docker.listContainers({
        all: true,
        filters: { label: [`com.docker.compose.project=${project.name}`] },
      });
      expect(containers).toEqual([]);
      const volumes = await docker.listVolumes({
        filters: { label: [`com.docker.compose.project=${project.name}`] },
      });
      expect(volumes.Volumes ?? []).toEqual([]);
    },
    STACK_TIMEOUT_MS,
  );
});
