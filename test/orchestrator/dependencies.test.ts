import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { settleWaitingJobs } from '../../src/orchestrator/waiting.js';
import { auditRows, finishJob, getJob, trigger, writePipelines } from './helpers.js';

const audit = { actor: 'test' };

describe('dependency chain ci -> integration-tests -> deploy', () => {
  let server: TestServer;
  beforeAll(async () => {
    const dir = makeTempDir();
    const pipelines = writePipelines(
      dir,
      `  auto-deploy:
    needs: [integration-tests]
    trigger_needs: true
    executor: local
    steps: [{ run: 'true' }]
  quick-deploy:
    needs: [ci]
    dependency_timeout: 1s
    executor: local
    steps: [{ run: 'true' }]
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
  });
  afterAll(async () => {
    await server.close();
  });

  it('writes the pipeline file dependencies to workflow_dependencies', async () => {
    const rows = await server.context.store.db
      .selectFrom('workflow_dependencies')
      .select(['workflow', 'depends_on'])
      .orderBy('workflow')
      .execute();
    expect(rows).toEqual([
      { workflow: 'auto-deploy', depends_on: 'integration-tests' },
      { workflow: 'deploy', depends_on: 'integration-tests' },
      { workflow: 'integration-tests', depends_on: 'ci' },
      { workflow: 'quick-deploy', depends_on: 'ci' },
    ]);
    const synced = await auditRows(server, 'dependencies_synced');
    expect(synced).toHaveLength(1);
    expect(synced[0]!.details.added).toContainEqual(['quick-deploy', 'ci']);
  });

  it('releases each job when the one it needs succeeds', async () => {
    const commit = 'a1b2c3d4e5f6';
    const ci = await trigger(server, 'ci', commit);
    const tests = await trigger(server, 'integration-tests', commit);
    const deploy = await trigger(server, 'deploy', commit);
    expect(ci.status).toBe('queued');
    expect(tests.status).toBe('waiting');
    expect(deploy.status).toBe('waiting');
    expect((await getJob(server, tests.job_id)).reason).toBe('waiting for ci of a1b2c3d');
    expect((await getJob(server, deploy.job_id)).reason).toBe(
      'waiting for integration-tests of a1b2c3d',
    );

    await finishJob(server, ci.job_id, 'success');
    expect((await getJob(server, tests.job_id)).status).toBe('queued');
    expect((await getJob(server, deploy.job_id)).status).toBe('waiting');

    await finishJob(server, tests.job_id, 'success');
    expect((await getJob(server, deploy.job_id)).status).toBe('queued');
    const released = await auditRows(server, 'job_released', deploy.job_id);
    expect(released.map((row) => row.details)).toEqual([
      {
        from: 'waiting',
        to: 'queued',
        after_job_id: tests.job_id,
        after_type: 'integration-tests',
      },
    ]);

    const done = await finishJob(server, deploy.job_id, 'success');
    expect(done.status).toBe('success');
    const state = await server.request('GET', '/api/state', { token: server.adminToken });
    expect(state.body.variables.LAST_DEPLOYED_COMMIT).toBe(commit);
    expect(state.body.variables.DEPLOY_STATUS).toBe('success');
  });

  it('skips the rest of the chain when ci fails', async () => {
    const commit = 'b1b2c3d4e5f6';
    const ci = await trigger(server, 'ci', commit);
    const tests = await trigger(server, 'integration-tests', commit);
    const deploy = await trigger(server, 'deploy', commit);
    await finishJob(server, ci.job_id, 'failure');

    const testsJob = await getJob(server, tests.job_id);
    expect(testsJob.status).toBe('skipped');
    expect(testsJob.reason).toBe(`ci of b1b2c3d ended failure (${ci.job_id})`);
    expect(testsJob.tasks[0]?.status).toBe('skipped');
    const deployJob = await getJob(server, deploy.job_id);
    expect(deployJob.status).toBe('skipped');
    expect(deployJob.reason).toBe(`integration-tests of b1b2c3d ended skipped (${tests.job_id})`);
    const finished = await auditRows(server, 'job_finished', deploy.job_id);
    expect(finished[0]!.details.status).toBe('skipped');
  });

  it('finishes a job created skipped', async () => {
    const commit = 'f1b2c3d4e5f6';
    const deploy = await trigger(server, 'deploy', commit);
    expect(deploy.status).toBe('waiting');
    const ci = await trigger(server, 'ci', commit);
    await finishJob(server, ci.job_id, 'failure');

    // Triggered after ci failed, integration-tests ends as it is created.
    const tests = await trigger(server, 'integration-tests', commit);
    expect(tests.status).toBe('skipped');
    const finished = await auditRows(server, 'job_finished', tests.job_id);
    expect(finished).toHaveLength(1);
    expect(finished[0]!.details.status).toBe('skipped');

    // The deploy that was waiting for it does not wait for its dependency timeout.
    const deployJob = await getJob(server, deploy.job_id);
    expect(deployJob.status).toBe('skipped');
    expect(deployJob.reason).toBe(`integration-tests of f1b2c3d ended skipped (${tests.job_id})`);
  });

  it('waits for ci when deploy is triggered before ci exists', async () => {
    const commit = 'c1b2c3d4e5f6';
    const deploy = await trigger(server, 'deploy', commit);
    expect(deploy.status).toBe('waiting');
    const ci = await trigger(server, 'ci', commit);
    const tests = await trigger(server, 'integration-tests', commit);
    await finishJob(server, ci.job_id, 'success');
    await finishJob(server, tests.job_id, 'success');
    const deployJob = await getJob(server, deploy.job_id);
    expect(deployJob.status).toBe('queued');
    expect(deployJob.reason).toBe('no worker is online');
  });

  it('names the missing executor of a queued job', async () => {
    const agent = await server.token('agent');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name: 'local-only', hostname: 'test-host', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBeLessThan(300);
    const queued = await trigger(server, 'ci', 'c2b2c3d4e5f6');
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ executor: 'docker' })
        .where('job_id', '=', queued.job_id)
        .execute(),
    );
    expect((await getJob(server, queued.job_id)).reason).toBe('no worker with the docker executor');
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ executor: 'local' })
        .where('job_id', '=', queued.job_id)
        .execute(),
    );
    expect((await getJob(server, queued.job_id)).reason).toBeNull();
    await server.context.store.write((trx) => trx.deleteFrom('workers').execute());
  });

  it('matches a short SHA with the full one', async () => {
    const full = 'e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7';
    // A person triggers integration-tests with the short SHA, GitHub triggers ci with the full
    // one, and the ci job's end releases the waiting job.
    const tests = await trigger(server, 'integration-tests', full.slice(0, 7));
    expect(tests.status).toBe('waiting');
    const ci = await trigger(server, 'ci', full);
    await finishJob(server, ci.job_id, 'success');
    expect((await getJob(server, tests.job_id)).status).toBe('queued');

    // The other way round: the dependency was triggered with a short SHA.
    await finishJob(server, tests.job_id, 'success');
    const deploy = await trigger(server, 'deploy', `${full.slice(0, 12)}`);
    expect(deploy.status).toBe('queued');

    // A job whose SHA only shares the first digits is not the same commit.
    const other = await trigger(server, 'integration-tests', `${full.slice(0, 7)}0`);
    expect(other.status).toBe('waiting');
  });

  it('skips a job whose need failed under another SHA form', async () => {
    const full = 'e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8';
    const tests = await trigger(server, 'integration-tests', full);
    const ci = await trigger(server, 'ci', full.slice(0, 9));
    await finishJob(server, ci.job_id, 'failure');
    const skipped = await getJob(server, tests.job_id);
    expect(skipped.status).toBe('skipped');
    expect(skipped.reason).toBe(`ci of e8e8e8e ended failure (${ci.job_id})`);
  });

  it('triggers missing needs when the pipeline asks for it', async () => {
    const commit = 'd1b2c3d4e5f6';
    const deploy = await trigger(server, 'auto-deploy', commit);
    expect(deploy.status).toBe('waiting');
    const jobs = await server.context.store.db
      .selectFrom('jobs')
      .select(['id', 'type', 'status'])
      .where('commit_sha', '=', commit)
      .orderBy('type')
      .execute();
    expect(jobs.map((job) => [job.type, job.status])).toEqual([
      ['auto-deploy', 'waiting'],
      ['ci', 'queued'],
      ['integration-tests', 'waiting'],
    ]);
    const triggered = await auditRows(server, 'job_triggered');
    const ciAudit = triggered.find((row) => row.job_id === jobs[1]!.id);
    expect(ciAudit?.details.triggered_as_dependency_of).toBe('integration-tests');
    await finishJob(server, jobs[1]!.id, 'success');
    await finishJob(server, jobs[2]!.id, 'success');
    expect((await getJob(server, deploy.job_id)).status).toBe('queued');

    // A job of the same commit under its short SHA finds them and triggers nothing.
    const again = await trigger(server, 'auto-deploy', commit.slice(0, 7));
    expect(again.status).toBe('queued');
    const count = await server.context.store.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('jobs'))
      .where('commit_sha', 'in', [commit, commit.slice(0, 7)])
      .executeTakeFirstOrThrow();
    expect(Number(count.jobs)).toBe(4);
  });

  it('skips a waiting job after its dependency timeout', async () => {
    const commit = 'e1b2c3d4e5f6';
    const quick = await trigger(server, 'quick-deploy', commit);
    expect(quick.status).toBe('waiting');
    expect(await settleWaitingJobs(server.context, audit)).toEqual([]);
    const outcomes = await settleWaitingJobs(server.context, audit, Date.now() + 1500);
    expect(outcomes.map((outcome) => outcome.jobId)).toContain(quick.job_id);
    const job = await getJob(server, quick.job_id);
    expect(job.status).toBe('skipped');
    expect(job.reason).toBe('gave up waiting for ci of e1b2c3d after 1s (dependency timeout)');
    expect(await auditRows(server, 'dependency_timed_out', quick.job_id)).toHaveLength(1);
  });

  it('releases a waiting job whose dependencies were removed', async () => {
    const waiting = await trigger(server, 'quick-deploy', '9a8b7c6d5e4f');
    expect(waiting.status).toBe('waiting');
    // What a start with a pipeline file without `needs: [ci]` writes.
    await server.context.store.write((trx) =>
      trx.deleteFrom('workflow_dependencies').where('workflow', '=', 'quick-deploy').execute(),
    );
    const outcomes = await settleWaitingJobs(server.context, audit);
    expect(outcomes).toEqual([{ jobId: waiting.job_id, to: 'queued', reason: null }]);
    const rows = await auditRows(server, 'state_repaired', waiting.job_id);
    expect(rows.map((row) => row.details.problem)).toEqual([
      'waiting job whose type no longer has dependencies in the pipeline file',
    ]);
  });
});
