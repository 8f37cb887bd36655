/** Rollback and the deploy state variables when one commit was deployed as a short and a full SHA. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { finishJob, trigger, writePipelines } from './helpers.js';

const OLD = '1111111111111111111111111111111111111111';
const FULL = 'abcdef1234567890abcdef1234567890abcdef12';
const SHORT = 'abcdef1';

describe('rollback with short SHAs', () => {
  let server: TestServer;

  beforeAll(async () => {
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
    });
  });
  afterAll(async () => {
    await server.close();
  });

  async function deploy(commit: string): Promise<void> {
    const ci = await trigger(server, 'ci', commit);
    await finishJob(server, ci.job_id, 'success');
    const tests = await trigger(server, 'integration-tests', commit);
    await finishJob(server, tests.job_id, 'success');
    const job = await trigger(server, 'deploy', commit);
    expect((await finishJob(server, job.job_id, 'success')).status).toBe('success');
  }

  async function state(): Promise<Record<string, string>> {
    const response = await server.request('GET', '/api/state', { token: server.adminToken });
    return response.body.variables;
  }

  it('keeps the previous commit on a redeploy', async () => {
    await deploy(OLD);
    await deploy(FULL);
    await deploy(SHORT);
    const variables = await state();
    expect(variables.LAST_DEPLOYED_COMMIT).toBe(SHORT);
    expect(variables.PREVIOUS_DEPLOYED_COMMIT).toBe(OLD);
  });

  it('rolls back past the same commit', async () => {
    const response = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
    });
    expect(response.status, response.text).toBe(201);
    expect(response.body.replacing).toBe(SHORT);
    expect(response.body.commit).toBe(OLD);
  });
});
