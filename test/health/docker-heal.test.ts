import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import type { TestServer } from '../support/server.js';
import { auditRows, startHealthServer } from './helpers.js';

const RUN_LABEL = 'slipway.test.health-run';
const run = randomBytes(4).toString('hex');
const names = {
  web: `slipway-health-${run}-web`,
  crashing: `slipway-health-${run}-crashing`,
  probed: `slipway-health-${run}-probed`,
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function createContainer(
  docker: Docker,
  name: string,
  cmd: string[],
  healthcheck?: Docker.ContainerCreateOptions['Healthcheck'],
): Promise<Docker.Container> {
  const container = await docker.createContainer({
    Image: TEST_IMAGE,
    name,
    Cmd: cmd,
    Labels: { [RUN_LABEL]: run },
    Healthcheck: healthcheck,
    HostConfig: { NetworkMode: 'none' },
  });
  await container.start();
  return container;
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('docker check and self-healing', () => {
  let docker: Docker;
  let server: TestServer;

  beforeAll(async () => {
    docker = await requireDocker();
    await createContainer(docker, names.web, ['sleep', '3600']);
    await createContainer(docker, names.crashing, ['sh', '-c', 'exit 3']);
    await createContainer(docker, names.probed, ['sleep', '3600'], {
      Test: ['CMD-SHELL', 'test -f /tmp/healthy'],
      Interval: 300_000_000,
      Timeout: 1_000_000_000,
      Retries: 1,
    });
    server = await startHealthServer(`
  - name: web
    type: docker
    containers: [${names.web}]
    heal:
      action: restart_container
      container: ${names.web}
      after: 2
  - name: crashing
    type: docker
    containers: [${names.crashing}]
    heal:
      action: restart_container
      container: ${names.crashing}
      cooldown: 2s
      max_per_hour: 2
  - name: probed
    type: docker
    containers: [${names.probed}]
  - name: missing
    type: docker
    containers: [slipway-health-${run}-absent]
    heal:
      action: recovery_procedure
      procedure: restart-absent
recovery:
  restart-absent:
    action: restart_container
    container: slipway-health-${run}-absent
`);
  });

  afterAll(async () => {
    await server?.close();
    const mine = await docker.listContainers({
      all: true,
      filters: { label: [`${RUN_LABEL}=${run}`] },
    });
    for (const container of mine) {
      await docker.getContainer(container.Id).remove({ force: true });
    }
  });

  const check = async (name: string) =>
    (await runHealthChecks(server.context, { force: true, names: [name] }))[0]!;
  const actions = async (component: string) =>
    (
      await server.context.store.db
        .selectFrom('health_actions')
        .selectAll()
        .where('component', '=', component)
        .orderBy('id')
        .execute()
    ).map((row) => row.outcome);

  it('restarts a stopped container after the threshold', async () => {
    expect((await check('web')).status).toBe('healthy');
    await docker.getContainer(names.web).stop({ t: 0 });

    const first = await check('web');
    expect(first.status).toBe('unhealthy');
    expect(first.reason).toContain(`container ${names.web} is exited`);
    expect(first.action).toBeUndefined();
    expect((await docker.getContainer(names.web).inspect()).State.Running).toBe(false);

    const second = await check('web');
    expect(second.action?.outcome).toBe('succeeded');
    expect((await docker.getContainer(names.web).inspect()).State.Running).toBe(true);
    expect((await check('web')).status).toBe('healthy');

    const started = await auditRows(server, 'health_action_started');
    expect(started.find((row) => row.details.component === 'web')?.details).toMatchObject({
      action: 'restart_container',
      target: names.web,
      failures: 2,
    });
    const succeeded = await auditRows(server, 'health_action_succeeded');
    expect(succeeded.some((row) => row.details.component === 'web')).toBe(true);
  });

  it('suppresses a flapping container by cooldown and hourly cap', async () => {
    // A restarted container runs for a moment before it exits again, and a check that finds it
    // running is healthy and records no action.
    const exited = () =>
      waitFor(
        () => docker.getContainer(names.crashing).inspect(),
        (info) => !info.State.Running,
        'the crashing container to exit',
      );
    await exited();
    const first = await check('crashing');
    expect(first.status).toBe('unhealthy');
    expect(first.reason).toContain('exit code 3');
    expect(first.action?.outcome).toBe('succeeded');

    // Right after the restart: inside the 2 s cooldown.
    await exited();
    const second = await check('crashing');
    expect(second.action).toBeUndefined();

    await sleep(2100);
    await exited();
    const third = await check('crashing');
    expect(third.action?.outcome).toBe('succeeded');

    await sleep(2100);
    await exited();
    const fourth = await check('crashing');
    expect(fourth.status).toBe('unhealthy');
    expect(fourth.action).toBeUndefined();

    // Held back again by the same cap: a row of its own, but no second audit row.
    const fifth = await check('crashing');
    expect(fifth.action).toBeUndefined();

    expect(await actions('crashing')).toEqual([
      'succeeded',
      'suppressed',
      'succeeded',
      'suppressed',
      'suppressed',
    ]);
    const suppressed = (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'crashing',
    );
    expect(suppressed).toHaveLength(2);
    expect(suppressed[0]!.details.reason).toMatch(/^cooldown: /);
    expect(suppressed[1]!.details.reason).toMatch(/^hourly cap: 2 action\(s\) in the last hour/);
    const nextAllowed = Date.parse(suppressed[1]!.details.next_allowed_at);
    expect(nextAllowed - Date.now()).toBeGreaterThan(59 * 60_000);
  });

  it('follows the container health check', async () => {
    await waitFor(
      () => docker.getContainer(names.probed).inspect(),
      (info) => info.State.Health?.Status === 'unhealthy',
      'docker to mark the container unhealthy',
    );
    const failing = await check('probed');
    expect(failing.status).toBe('unhealthy');
    expect(failing.reason).toContain('fails its health check');

    const exec = await docker
      .getContainer(names.probed)
      .exec({ Cmd: ['touch', '/tmp/healthy'], AttachStdout: false, AttachStderr: false });
    await exec.start({ Detach: true });
    await waitFor(
      () => docker.getContainer(names.probed).inspect(),
      (info) => info.State.Health?.Status === 'healthy',
      'docker to mark the container healthy',
    );
    const passing = await check('probed');
    expect(passing.status).toBe('healthy');
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    const details = status.body.components.probed.details;
    expect(details.containers[names.probed]).toMatchObject({
      state: 'running',
      health: 'healthy',
      restart_count: 0,
    });
    expect(details.engine.api_version).toMatch(/^\d+\.\d+$/);
  });

  it('records a recovery procedure that fails', async () => {
    const outcome = await check('missing');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toBe(`container slipway-health-${run}-absent not found`);
    expect(outcome.action?.outcome).toBe('failed');
    expect(await actions('missing')).toEqual(['failed']);
    const failed = (await auditRows(server, 'health_action_failed')).find(
      (row) => row.details.component === 'missing',
    );
    expect(failed?.details).toMatchObject({
      action: 'recovery_procedure',
      target: 'restart-absent',
      procedure: 'restart-absent',
    });
    expect(failed?.details.error).toContain(`slipway-health-${run}-absent`);
  });
});
