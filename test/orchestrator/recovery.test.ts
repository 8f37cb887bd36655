import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type Docker from 'dockerode';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { runRecoveryProcedure } from '../../src/orchestrator/recovery.js';
import { auditRows, finishJob, getJob, trigger, writePipelines } from './helpers.js';

const TEST_LABEL = 'slipway.test';
const OWNER = `orch-recovery-${process.pid}`;

describe('rollback and recovery procedures', () => {
  let server: TestServer;
  let docker: Docker;
  const containerName = `slipway-test-restart-${process.pid}`;

  beforeAll(async () => {
    docker = await requireDocker();
    const dir = makeTempDir();
    const pipelines = writePipelines(
      dir,
      `  recovery:
    executor: local
    steps: [{ run: 'true' }]
recovery:
  restart-app:
    action: restart_container
    container: ${containerName}
  restart-missing:
    action: restart_container
    container: slipway-test-no-such-container-${process.pid}
  rerun:
    action: rerun_failed
  full:
    action: run_pipeline
    pipeline: recovery
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
  });
  afterAll(async () => {
    const mine = await docker.listContainers({
      all: true,
      filters: { label: [`${TEST_LABEL}=${OWNER}`] },
    });
    for (const info of mine) await docker.getContainer(info.Id).remove({ force: true });
    await server.close();
  });

  async function deploy(commit: string): Promise<string> {
    const ci = await trigger(server, 'ci', commit);
    await finishJob(server, ci.job_id, 'success');
    const tests = await trigger(server, 'integration-tests', commit);
    await finishJob(server, tests.job_id, 'success');
    const job = await trigger(server, 'deploy', commit);
    expect((await finishJob(server, job.job_id, 'success')).status).toBe('success');
    return job.job_id;
  }

  async function state(): Promise<Record<string, string>> {
    const response = await server.request('GET', '/api/state', { token: server.adminToken });
    return response.body.variables;
  }

  it('answers 409 when no deploy succeeded yet', async () => {
    const response = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
      body: {},
    });
    expect(response.status).toBe(409);
    expect(response.body.code).toBe('no_previous_deploy');
    expect(response.body.error).toContain('no deploy has succeeded yet');
  });

  it('rolls back to the deploy before the current one', async () => {
    await deploy('1111111aaaa');
    await deploy('2222222bbbb');
    expect(await state()).toMatchObject({
      LAST_DEPLOYED_COMMIT: '2222222bbbb',
      PREVIOUS_DEPLOYED_COMMIT: '1111111aaaa',
      DEPLOY_STATUS: 'success',
    });

    const response = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
    });
    expect(response.status, response.text).toBe(201);
    expect(response.body).toMatchObject({
      commit: '1111111aaaa',
      replacing: '2222222bbbb',
      status: 'queued',
    });
    expect(response.body.job_id).toMatch(/^rollback-/);
    const triggered = await auditRows(server, 'job_triggered', response.body.job_id);
    expect(triggered[0]!.details.rollback_to).toBe('1111111aaaa');

    await finishJob(server, response.body.job_id, 'success');
    expect(await state()).toMatchObject({
      LAST_DEPLOYED_COMMIT: '1111111aaaa',
      PREVIOUS_DEPLOYED_COMMIT: '2222222bbbb',
      DEPLOY_STATUS: 'rolled_back',
    });
  });

  it('goes further back on each rollback', async () => {
    async function rollBack(): Promise<{ status: number; commit?: string; replacing?: string }> {
      const response = await server.request('POST', '/api/rollback/execute', {
        token: server.adminToken,
      });
      if (response.status === 201) await finishJob(server, response.body.job_id, 'success');
      return { status: response.status, ...response.body };
    }
    // 1111111aaaa is deployed now, by the rollback of the test before, which replaced 2222222bbbb.
    await deploy('4444444dddd');
    await deploy('5555555eeee');

    expect(await rollBack()).toMatchObject({ commit: '4444444dddd', replacing: '5555555eeee' });
    // Not 5555555eeee again: a rollback replaced it, so it is not known to be good.
    expect(await rollBack()).toMatchObject({ commit: '1111111aaaa', replacing: '4444444dddd' });
    const none = await rollBack();
    expect(none.status).toBe(409);
    expect((none as { code?: string }).code).toBe('no_previous_deploy');
    expect(await state()).toMatchObject({ LAST_DEPLOYED_COMMIT: '1111111aaaa' });

    // A commit deployed again after its rollback counts again, and rolling back from it goes to
    // the commit deployed before it.
    await deploy('5555555eeee');
    expect(await rollBack()).toMatchObject({ commit: '1111111aaaa', replacing: '5555555eeee' });
  });

  it('deploys a given commit and rejects a bad one', async () => {
    const given = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
      body: { commit: '3333333cccc' },
    });
    expect(given.status).toBe(201);
    expect(given.body.commit).toBe('3333333cccc');
    const bad = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
      body: { commit: 'not-a-sha' },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.field).toBe('commit');
    const forbidden = await server.request('POST', '/api/rollback/execute', {
      token: await server.token('trigger'),
      body: {},
    });
    expect(forbidden.status).toBe(403);
  });

  it('restarts a container through the Docker API', async () => {
    const container = await docker.createContainer({
      Image: TEST_IMAGE,
      name: containerName,
      Cmd: ['sleep', '300'],
      Labels: { [TEST_LABEL]: OWNER },
    });
    await container.start();
    const before = (await container.inspect()).State.StartedAt;
    const response = await server.request('POST', '/api/recovery/execute', {
      token: server.adminToken,
      body: { procedure: 'restart-app' },
    });
    expect(response.status, response.text).toBe(200);
    expect(response.body).toMatchObject({ ok: true, action: 'restart_container' });
    const after = await container.inspect();
    expect(after.State.Running).toBe(true);
    expect(after.State.StartedAt).not.toBe(before);
    const rows = await auditRows(server, 'recovery_executed');
    expect(rows.at(-1)!.details).toMatchObject({ procedure: 'restart-app', ok: true });
  });

  it('reports a missing container as 502 and audits it', async () => {
    const response = await server.request('POST', '/api/recovery/execute', {
      token: server.adminToken,
      body: { procedure: 'restart-missing' },
    });
    expect(response.status).toBe(502);
    expect(response.body.code).toBe('recovery_failed');
    expect(response.body.error).toContain('not found on the Docker engine');
    const rows = await auditRows(server, 'recovery_executed');
    expect(rows.at(-1)!.details).toMatchObject({ procedure: 'restart-missing', ok: false });
  });

  it('re-runs the failed jobs of a commit in dependency order', async () => {
    const commit = '4444444dddd';
    const ci = await trigger(server, 'ci', commit);
    const tests = await trigger(server, 'integration-tests', commit);
    await finishJob(server, ci.job_id, 'failure');
    expect((await getJob(server, tests.job_id)).status).toBe('skipped');

    const result = await runRecoveryProcedure(
      server.context,
      'rerun',
      { commit },
      { actor: 'health' },
    );
    expect(result.ok).toBe(true);
    expect(result.jobs.map((job) => [job.type, job.status])).toEqual([
      ['ci', 'queued'],
      ['integration-tests', 'waiting'],
    ]);
    expect((await getJob(server, ci.job_id)).attempt).toBe(2);
    await finishJob(server, ci.job_id, 'success');
    expect((await getJob(server, tests.job_id)).status).toBe('queued');
  });

  it('runs a recovery pipeline for the deployed commit', async () => {
    const response = await server.request('POST', '/api/recovery/execute', {
      token: server.adminToken,
      body: { procedure: 'full' },
    });
    expect(response.status).toBe(200);
    const [job] = response.body.jobs;
    expect(job.type).toBe('recovery');
    expect((await getJob(server, job.job_id)).commit).toBe('1111111aaaa');
  });

  it('answers 404 naming the defined procedures for an unknown one', async () => {
    const response = await server.request('POST', '/api/recovery/execute', {
      token: server.adminToken,
      body: { procedure: 'nope' },
    });
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('procedure_not_found');
    expect(response.body.error).toContain('defined: restart-app, restart-missing, rerun, full');
  });
});
