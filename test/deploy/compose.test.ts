/**
 * The compose stack on the real Docker engine, with the commands of docs/setup.md: build both
 * Dockerfile targets, bring the stack up, run a job through the published port, restart the
 * whole stack and check that the job, its logs and its audit trail survived, then remove it.
 *
 * The base image node:20-bookworm-slim is the local stand-in of scripts/build-base-image.sh,
 * because no registry is reachable here. Building the images from an empty cache takes about
 * six minutes on two cores; later runs reuse the engine's layer cache.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComposeProject, freePort, REPO_ROOT } from '../support/compose.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';

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
let docker: Docker;
let baseUrl: string;

async function api(
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<{ status: number; text: string; json: any }> {
  const response = await fetch(`${baseUrl}${urlPath}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
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

async function waitForJob(jobId: string): Promise<any> {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  let job: any;
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
  // Task containers carry the job labels; the worker removes them, this catches leftovers.
  const leftovers = await docker.listContainers({
    all: true,
    filters: { label: [`com.docker.compose.project=${project.name}`] },
  });
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
        expect(Object.keys(info.Config.Volumes ?? {})).toEqual(
          expect.arrayContaining(['/var/lib/slipway/state', '/var/lib/slipway/logs']),
        );
      }
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
      expect(bindings.map((binding: { HostIp: string }) => binding.HostIp)).toEqual([
        '127.0.0.1',
      ]);
      expect(info.Config.User).toBe('node');

      const health = await fetch(`${baseUrl}/api/health/status`);
      expect(health.status).toBe(200);
      const init = await docker.getContainer((await project.containerId('database-init'))!);
      expect((await init.inspect()).State.ExitCode).toBe(0);
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
