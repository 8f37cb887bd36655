/**
 * A matrix axis with `from` and no `default` takes its values only from the trigger. A trigger
 * without them would make a job with no task, which stays queued and is never claimed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const PIPELINES = `
pipelines:
  first:
    executor: local
    steps: [{ name: first, run: 'true' }]
  versioned:
    executor: local
    matrix:
      version: { from: versions }
    steps: [{ name: test, run: 'true' }]
  release:
    executor: local
    needs: [first, versioned]
    trigger_needs: true
    steps: [{ name: release, run: 'true' }]
`;

describe('matrix axis without default', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({ SLIPWAY_PIPELINES: writePipelineFile(PIPELINES) });
    token = await server.token('trigger');
  });
  afterAll(async () => {
    await server.close();
  });

  it('rejects a trigger without its field', async () => {
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', '/api/trigger/versioned', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('validation_failed');
    expect(response.body.field).toBe('versions');
    expect(response.body.rule).toBe('matrix');
    expect(response.body.error).toContain('versions is required');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('rolls back needs triggered before the rejection', async () => {
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', '/api/trigger/release', {
      token,
      body: { commit: 'abc1235' },
    });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('params.versions');
    expect(response.body.rule).toBe('matrix');
    expect(response.body.error).toBe(
      'job type versioned, which release needs and which this trigger creates (trigger_needs), ' +
        'has a matrix axis without default that reads "versions"; a needed job gets only the ' +
        "trigger's params, so send params.versions, or trigger versioned for this commit first",
    );
    // The first need was inserted, with its audit row, before the second one failed.
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('rejects an empty needed matrix', async () => {
    const response = await server.request('POST', '/api/trigger/release', {
      token,
      body: { commit: 'abc1237', params: { versions: [] } },
    });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('params.versions');
    expect(response.body.rule).toBe('matrix');
    expect(response.body.error).toBe(
      'job type versioned, which release needs and which this trigger creates (trigger_needs), ' +
        "cannot be created from the trigger's params: params.versions must not be an empty list; " +
        'correct params.versions, or trigger versioned for this commit first',
    );
  });

  it('creates a needed job from the params', async () => {
    const response = await server.request('POST', '/api/trigger/release', {
      token,
      body: { commit: 'abc1236', params: { versions: ['1', '2'] } },
    });
    expect(response.status).toBe(201);
    const jobs = await server.context.store.db
      .selectFrom('jobs')
      .select(['type', 'status'])
      .where('commit_sha', '=', 'abc1236')
      .orderBy('type')
      .execute();
    expect(jobs.map((job) => job.type)).toEqual(['first', 'release', 'versioned']);
  });

  it('takes the values from the trigger', async () => {
    const response = await server.request('POST', '/api/trigger/versioned', {
      token,
      body: { commit: 'abc1236', versions: ['1', '2'] },
    });
    expect(response.status).toBe(201);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, { token });
    expect(job.body.tasks.map((task: { name: string }) => task.name)).toEqual([
      'versioned (1)',
      'versioned (2)',
    ]);
  });
});
