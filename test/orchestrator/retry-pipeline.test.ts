/**
 * A retry runs the pipeline stored with the job when it was triggered. An edit to the pipeline
 * file, loaded by a restarted API, applies only to jobs triggered after it.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { buildTaskSpec } from '../../src/dispatch/task-spec.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { finishJob, trigger } from './helpers.js';

function writeCi(file: string, command: string): void {
  fs.writeFileSync(
    file,
    `pipelines:\n  ci:\n    executor: local\n    steps: [{ run: '${command}' }]\n`,
  );
}

function writeDockerCi(file: string, user: string): void {
  fs.writeFileSync(
    file,
    'pipelines:\n  ci:\n    executor: docker\n    image: busybox\n' +
      `    user: "${user}"\n    steps: [{ run: id }]\n`,
  );
}

/** Returns the task specs of the job's tasks of `attempt`, as a worker's claim gets them. */
async function specsOf(server: TestServer, jobId: string, attempt: number) {
  const db = server.context.store.db;
  const job = await db.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirst();
  const tasks = await db
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', jobId)
    .where('job_attempt', '=', attempt)
    .execute();
  expect(tasks.length).toBeGreaterThan(0);
  return tasks.map((task) => buildTaskSpec(job!, task));
}

/** Returns the commands that the job's tasks of `attempt` would run. */
async function commandsOf(server: TestServer, jobId: string, attempt: number) {
  const specs = await specsOf(server, jobId, attempt);
  return specs.flatMap((spec) => spec.steps.map((step) => step.run));
}

describe('retry after the pipeline file changed', () => {
  let server: TestServer | undefined;

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('runs the stored pipeline', async () => {
    const dataDir = makeTempDir('slipway-retry-pipeline-');
    const file = `${makeTempDir('slipway-retry-pipelines-')}/slipway.yml`;
    writeCi(file, 'echo first');
    const env = { SLIPWAY_DATA_DIR: dataDir, SLIPWAY_PIPELINES: file };
    server = await startTestServer(env);
    const { job_id: jobId } = await trigger(server, 'ci', 'abcdef1');
    await finishJob(server, jobId, 'failure');
    await server.close();

    writeCi(file, 'echo edited');
    server = await startTestServer(env);
    const retried = await server.request('POST', `/api/job/${jobId}/retry`, {
      token: server.adminToken,
    });
    expect(retried.status, retried.text).toBe(201);
    expect(await commandsOf(server, jobId, 2)).toEqual(['echo first']);

    const { job_id: newJobId } = await trigger(server, 'ci', 'abcdef1');
    expect(await commandsOf(server, newJobId, 1)).toEqual(['echo edited']);
  });

  it('keeps the stored user', async () => {
    const dataDir = makeTempDir('slipway-retry-user-');
    const file = `${makeTempDir('slipway-retry-user-pipelines-')}/slipway.yml`;
    writeDockerCi(file, '1234:1234');
    const env = { SLIPWAY_DATA_DIR: dataDir, SLIPWAY_PIPELINES: file };
    server = await startTestServer(env);
    const { job_id: jobId } = await trigger(server, 'ci', 'abcdef1');
    expect((await specsOf(server, jobId, 1)).map((spec) => spec.user)).toEqual(['1234:1234']);
    await finishJob(server, jobId, 'error');
    await server.close();

    writeDockerCi(file, '5678:5678');
    server = await startTestServer(env);
    const retried = await server.request('POST', `/api/job/${jobId}/retry`, {
      token: server.adminToken,
    });
    expect(retried.status, retried.text).toBe(201);
    expect((await specsOf(server, jobId, 2)).map((spec) => spec.user)).toEqual(['1234:1234']);

    const { job_id: newJobId } = await trigger(server, 'ci', 'abcdef1');
    expect((await specsOf(server, newJobId, 1)).map((spec) => spec.user)).toEqual(['5678:5678']);
  });
});
