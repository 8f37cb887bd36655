/** Helpers for orchestrator tests: pipeline files, job status changes and audit reads. */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { JobView } from '../../src/api/schemas.js';
import type { TestServer } from '../support/server.js';

/** Pipelines with the ci -> integration-tests -> deploy chain, local executor, short steps; `extra` is appended. */
export function writePipelines(dir: string, extra = ''): string {
  const file = path.join(dir, 'slipway.yml');
  fs.writeFileSync(
    file,
    `pipelines:
  ci:
    executor: local
    steps: [{ run: 'true' }]
  integration-tests:
    needs: [ci]
    executor: local
    steps: [{ run: 'true' }]
  deploy:
    needs: [integration-tests]
    executor: local
    steps: [{ run: 'true' }]
    on_success:
      state: { LAST_DEPLOYED_COMMIT: '\${{ commit }}', DEPLOY_STATUS: success }
  rollback:
    executor: local
    steps: [{ run: 'true' }]
    on_success:
      state: { LAST_DEPLOYED_COMMIT: '\${{ commit }}', DEPLOY_STATUS: rolled_back }
${extra}`,
  );
  return file;
}

export async function trigger(
  server: TestServer,
  type: string,
  commit: string,
  extra: Record<string, unknown> = {},
): Promise<{ job_id: string; status: string; reason?: string | null }> {
  const response = await server.request('POST', `/api/trigger/${type}`, {
    token: server.adminToken,
    body: { commit, branch: 'main', ...extra },
  });
  expect(response.status, response.text).toBe(201);
  return response.body;
}

export async function getJob(server: TestServer, id: string): Promise<JobView> {
  const response = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
  expect(response.status, response.text).toBe(200);
  return response.body;
}

/** Moves a job through `running` to `to` with the PATCH status endpoint, as a worker would. */
export async function finishJob(server: TestServer, id: string, to: string): Promise<JobView> {
  for (const status of to === 'running' ? ['running'] : ['running', to]) {
    const response = await server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status, ...(status === 'running' ? {} : { exit_code: to === 'success' ? 0 : 1 }) },
    });
    expect(response.status, response.text).toBe(200);
  }
  return getJob(server, id);
}

export async function auditRows(server: TestServer, action: string, jobId?: string) {
  let query = server.context.store.db
    .selectFrom('audit_log')
    .selectAll()
    .where('action', '=', action);
  if (jobId !== undefined) query = query.where('job_id', '=', jobId);
  const rows = await query.orderBy('id').execute();
  return rows.map((row) => ({ ...row, details: JSON.parse(row.details) }));
}

export async function waitFor<T>(
  probe: () => Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
