import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walHealth, WAL_DEGRADED_BYTES } from '../../src/health/wal.js';
import { startTestServer, type TestServer } from '../support/server.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('API endpoints, success paths', () => {
  let server: TestServer;
  let admin: string;

  const trigger = (type: string, body: Record<string, unknown>, headers = {}) =>
    server.request('POST', `/api/trigger/${type}`, { token: admin, body, headers });
  const patchStatus = (id: string, status: string, extra: Record<string, unknown> = {}) =>
    server.request('PATCH', `/api/job/${id}/status`, {
      token: admin,
      body: { status, ...extra },
    });
  const getJob = (id: string) => server.request('GET', `/api/job/${id}`, { token: admin });

  beforeAll(async () => {
    server = await startTestServer();
    admin = server.adminToken;
  });
  afterAll(async () => {
    await server.close();
  });

  it('fixed trigger paths return 201 and job_id', async () => {
    const ci = await trigger('ci', { commit: COMMIT, branch: 'main' });
    expect(ci.status).toBe(201);
    expect(Object.keys(ci.body).sort()).toEqual(['job_id', 'reason', 'status']);
    expect(ci.body.job_id).toMatch(/^ci-[0-9a-f]{8}$/);
    expect(ci.body.status).toBe('queued');

    const integration = await trigger('integration-tests', { commit: COMMIT, branch: 'main' });
    expect(integration.status).toBe(201);
    expect(integration.body.job_id).toMatch(/^integration-tests-[0-9a-f]{8}$/);
    expect(integration.body.status).toBe('waiting');
    expect(integration.body.reason).toBe('waiting for ci of 0123456');

    const deploy = await trigger('deploy', { commit: COMMIT, branch: 'main' });
    expect(deploy.status).toBe(201);
    expect(deploy.body.job_id).toMatch(/^deploy-[0-9a-f]{8}$/);
    expect(deploy.body.status).toBe('waiting');
  });

  it('generic trigger path queues a pipeline-file type', async () => {
    const recovery = await trigger('recovery', { commit: 'abcdef1' });
    expect(recovery.status).toBe(201);
    expect(recovery.body.job_id).toMatch(/^recovery-[0-9a-f]{8}$/);
    expect(recovery.body.status).toBe('queued');
    const job = await getJob(recovery.body.job_id);
    expect(job.body.type).toBe('recovery');
    expect(job.body.branch).toBeNull();
  });

  it('GET job returns fields, tasks, links', async () => {
    const created = await trigger('ci', {
      commit: 'ABCDEF0123',
      branch: 'feature/matrix',
      python_versions: ['3.10', '3.11'],
      github_run_id: '777',
      params: { suite: 'fast' },
    });
    const id = created.body.job_id as string;
    const job = await getJob(id);
    expect(job.status).toBe(200);
    expect(job.headers.get('content-type')).toMatch(/application\/json/);
    for (const field of ['id', 'type', 'status', 'commit', 'branch', 'started_at', 'created_at']) {
      expect(job.body).toHaveProperty(field);
    }
    expect(job.body.id).toBe(id);
    expect(job.body.type).toBe('ci');
    expect(job.body.status).toBe('queued');
    expect(job.body.commit).toBe('abcdef0123');
    expect(job.body.branch).toBe('feature/matrix');
    expect(job.body.started_at).toBeNull();
    expect(job.body.finished_at).toBeNull();
    expect(job.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(job.body.attempt).toBe(1);
    // No worker runs in this test server, so the job's reason explains the wait.
    expect(job.body.reason).toBe('no worker is online');
    expect(job.body.github_run_id).toBe('777');
    expect(job.body.github_run_attempt).toBe(1);
    expect(job.body.params).toEqual({ suite: 'fast' });
    expect(job.body.inputs).toEqual({ python_versions: ['3.10', '3.11'] });
    expect(job.body.links).toEqual({ self: `/api/job/${id}`, logs: `/api/job/${id}/logs` });
    expect(job.body.tasks).toHaveLength(2);
    expect(job.body.tasks.map((task: { matrix: unknown }) => task.matrix)).toEqual([
      { python_version: '3.10' },
      { python_version: '3.11' },
    ]);
    expect(job.body.tasks[0].id).toBe(`${id}.1.0`);
    expect(job.body.tasks[0].status).toBe('queued');
    expect(job.body.tasks[1].logs_url).toBe(`/api/job/${id}/logs?task=${id}.1.1`);
  });

  it('cancel stops a queued job and retry starts attempt 2', async () => {
    const created = await trigger('ci', { commit: 'cafe123', branch: 'cancel-me' });
    const id = created.body.job_id as string;

    const cancelled = await server.request('POST', `/api/job/${id}/cancel`, { token: admin });
    expect(cancelled.status).toBe(202);
    expect(cancelled.body.status).toBe('cancelled');
    expect(cancelled.body.reason).toBe('cancelled by admin');
    expect(cancelled.body.finished_at).not.toBeNull();
    expect(cancelled.body.tasks[0].status).toBe('cancelled');

    const retried = await server.request('POST', `/api/job/${id}/retry`, { token: admin });
    expect(retried.status).toBe(201);
    expect(retried.body.id).toBe(id);
    expect(retried.body.attempt).toBe(2);
    expect(retried.body.status).toBe('queued');
    expect(retried.body.finished_at).toBeNull();
    expect(retried.body.tasks).toHaveLength(1);
    expect(retried.body.tasks[0].id).toBe(`${id}.2.0`);
    expect(retried.body.tasks[0].status).toBe('queued');
  });

  it('cancel takes a reason in the body', async () => {
    const created = await trigger('ci', { commit: 'cafe124', branch: 'cancel-reason' });
    const cancelled = await server.request('POST', `/api/job/${created.body.job_id}/cancel`, {
      token: admin,
      body: { reason: 'superseded by a hotfix' },
    });
    expect(cancelled.status).toBe(202);
    expect(cancelled.body.reason).toBe('superseded by a hotfix');
  });

  it('a newer ci job on the branch cancels the older one', async () => {
    const older = await trigger('ci', { commit: '1111111', branch: 'busy-branch' });
    const newer = await trigger('ci', { commit: '2222222', branch: 'busy-branch' });
    expect(newer.status).toBe(201);
    const job = await getJob(older.body.job_id);
    expect(job.body.status).toBe('cancelled');
    expect(job.body.reason).toContain(newer.body.job_id);
  });

  it('PATCH status drives the ci, integration-tests, deploy chain', async () => {
    const commit = 'feedface01';
    const ci = await trigger('ci', { commit, branch: 'release/1.0' });
    const tests = await trigger('integration-tests', { commit, branch: 'release/1.0' });
    const deploy = await trigger('deploy', { commit, branch: 'release/1.0' });
    expect(tests.body.status).toBe('waiting');

    const running = await patchStatus(ci.body.job_id, 'running');
    expect(running.status).toBe(200);
    expect(running.body.status).toBe('running');
    expect(running.body.started_at).not.toBeNull();
    expect(running.body.tasks[0].status).toBe('running');

    const success = await patchStatus(ci.body.job_id, 'success', { exit_code: 0 });
    expect(success.status).toBe(200);
    expect(success.body.status).toBe('success');
    expect(success.body.finished_at).not.toBeNull();
    expect(success.body.tasks[0].exit_code).toBe(0);

    expect((await getJob(tests.body.job_id)).body.status).toBe('queued');
    expect((await getJob(deploy.body.job_id)).body.status).toBe('waiting');
    await patchStatus(tests.body.job_id, 'running');
    await patchStatus(tests.body.job_id, 'success');
    expect((await getJob(deploy.body.job_id)).body.status).toBe('queued');
    await patchStatus(deploy.body.job_id, 'running');
    const deployed = await patchStatus(deploy.body.job_id, 'success');
    expect(deployed.body.status).toBe('success');

    const state = await server.request('GET', '/api/state', { token: admin });
    expect(state.status).toBe(200);
    expect(state.body.variables.LAST_DEPLOYED_COMMIT).toBe(commit);
    expect(state.body.variables.DEPLOY_STATUS).toBe('success');
    const entry = state.body.entries.find(
      (item: { name: string }) => item.name === 'LAST_DEPLOYED_COMMIT',
    );
    expect(entry.updated_at).toMatch(/Z$/);
    expect(entry.synced_at).toBeNull();
    expect(state.body.dependencies).toEqual([
      { workflow: 'deploy', depends_on: 'integration-tests', source: 'default' },
      { workflow: 'integration-tests', depends_on: 'ci', source: 'default' },
    ]);
    expect(state.body.jobs.success).toBeGreaterThanOrEqual(3);
  });

  it('PATCH failure records the reason and skips dependents', async () => {
    const commit = 'badc0de1';
    const ci = await trigger('ci', { commit, branch: 'broken' });
    const tests = await trigger('integration-tests', { commit, branch: 'broken' });
    await patchStatus(ci.body.job_id, 'running');
    const failed = await patchStatus(ci.body.job_id, 'failure', {
      exit_code: 1,
      reason: 'pytest failed',
    });
    expect(failed.status).toBe(200);
    expect(failed.body.status).toBe('failure');
    expect(failed.body.reason).toBe('pytest failed');
    const skipped = await getJob(tests.body.job_id);
    expect(skipped.body.status).toBe('skipped');
    expect(skipped.body.reason).toContain(ci.body.job_id);
  });

  it('logs are empty text before a task writes any', async () => {
    const created = await trigger('ci', { commit: 'aaaaaaa', branch: 'logs-empty' });
    const logs = await server.request('GET', `/api/job/${created.body.job_id}/logs`, {
      token: admin,
    });
    expect(logs.status).toBe(200);
    expect(logs.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(logs.text).toBe('');
  });

  it('logs return each task file, or one with ?task=', async () => {
    const created = await trigger('ci', {
      commit: 'bbbbbbb',
      branch: 'logs-full',
      python_versions: ['3.11', '3.12'],
    });
    const id = created.body.job_id as string;
    for (const index of [0, 1]) {
      const file = path.join(server.dataDir, `task-${index}.log`);
      fs.writeFileSync(file, `output of task ${index}\n`);
      await server.context.store.write((trx) =>
        trx
          .updateTable('tasks')
          .set({ log_path: file })
          .where('id', '=', `${id}.1.${index}`)
          .execute(),
      );
    }
    const all = await server.request('GET', `/api/job/${id}/logs`, { token: admin });
    expect(all.status).toBe(200);
    expect(all.text).toContain(`==> ci (3.11) (${id}.1.0) <==\noutput of task 0\n`);
    expect(all.text).toContain(`==> ci (3.12) (${id}.1.1) <==\noutput of task 1\n`);

    const byId = await server.request('GET', `/api/job/${id}/logs?task=${id}.1.1`, {
      token: admin,
    });
    expect(byId.text).toBe('output of task 1\n');
    const byName = await server.request(
      'GET',
      `/api/job/${id}/logs?task=${encodeURIComponent('ci (3.11)')}`,
      { token: admin },
    );
    expect(byName.text).toBe('output of task 0\n');
  });

  it('health is public and checks the database', async () => {
    const health = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(health.status).toBe(200);
    expect(health.body.status).toBe('healthy');
    expect(health.body.components.api.status).toBe('healthy');
    expect(health.body.components.api.details.pid).toBe(process.pid);
    expect(health.body.components.database.status).toBe('healthy');
    expect(health.body.components.database.details.path).toBe(server.context.store.path);
    const wal = health.body.components.database.details.wal;
    expect(wal.frames).toBeGreaterThan(0);
    expect(wal.bytes).toBeGreaterThan(wal.frames * 4096);
    expect(wal.checkpointed_frames).toBeLessThanOrEqual(wal.frames);
    expect(health.body.checked_at).toMatch(/Z$/);
  });

  it('health degrades the database for a large WAL', () => {
    const use = { frames: 70_000, checkpointedFrames: 60_000, bytes: 288_392_000 };

    const large = walHealth(use);
    const small = walHealth({ frames: 100, checkpointedFrames: 0, bytes: 412_032 });

    expect(large.status).toBe('degraded');
    expect(large.details.wal).toEqual({
      frames: 70_000,
      checkpointed_frames: 60_000,
      bytes: 288_392_000,
    });
    expect(large.details.reason).toContain('the write-ahead log holds 275.0 MiB, over 256.0 MiB');
    expect(large.details.reason).toContain('a sqlite3 shell');
    expect(small.status).toBe('healthy');
    expect(small.details.reason).toBeUndefined();
    expect(walHealth(use, WAL_DEGRADED_BYTES * 2).status).toBe('healthy');
    // Copied in full, so the next write starts it over.
    expect(walHealth({ ...use, checkpointedFrames: 70_000 }).status).toBe('healthy');
    expect(walHealth(undefined)).toEqual({ status: 'healthy', details: {} });
  });

  it('health reports 503 when a component is unhealthy', async () => {
    await server.context.store.write((trx) =>
      trx
        .insertInto('health_metrics')
        .values({
          component: 'database',
          status: 'unhealthy',
          latency_ms: null,
          details: JSON.stringify({ error: 'disk full' }),
          recorded_at: new Date().toISOString(),
        })
        .execute(),
    );
    const health = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(health.status).toBe(503);
    expect(health.body.status).toBe('unhealthy');
    // The recorded result of the database check is shown, with its details.
    expect(health.body.components.database.status).toBe('unhealthy');
    expect(health.body.components.database.details.error).toBe('disk full');
    await server.context.store.write((trx) =>
      trx
        .insertInto('health_metrics')
        .values({
          component: 'database',
          status: 'healthy',
          latency_ms: 3,
          details: '{}',
          recorded_at: new Date().toISOString(),
        })
        .execute(),
    );
    expect(
      (await server.request('GET', '/api/health/status', { token: server.adminToken })).status,
    ).toBe(200);
  });

  it('metrics expose job counts and request durations', async () => {
    const metrics = await server.request('GET', '/metrics', { token: admin });
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    const queued = /^slipway_jobs\{status="queued"\} (\d+)$/m.exec(metrics.text);
    expect(queued).not.toBeNull();
    const counts = await server.context.store.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('status', '=', 'queued')
      .executeTakeFirstOrThrow();
    expect(Number(queued![1])).toBe(Number(counts.count));
    expect(metrics.text).toMatch(
      /slipway_http_request_duration_seconds_count\{method="POST",route="\/api\/trigger\/ci",status="201"\} \d+/,
    );
    expect(metrics.text).toContain('slipway_process_resident_memory_bytes');
  });

  it('OpenAPI document lists every endpoint', async () => {
    const doc = await server.request('GET', '/api/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    const paths = doc.body.paths as Record<string, Record<string, unknown>>;
    const expected: Array<[string, string]> = [
      ['post', '/api/trigger/ci'],
      ['post', '/api/trigger/integration-tests'],
      ['post', '/api/trigger/deploy'],
      ['post', '/api/trigger/{type}'],
      ['get', '/api/job/{job_id}'],
      ['get', '/api/job/{job_id}/logs'],
      ['post', '/api/job/{job_id}/cancel'],
      ['post', '/api/job/{job_id}/retry'],
      ['patch', '/api/job/{job_id}/status'],
      ['get', '/api/health/status'],
      ['get', '/api/state'],
      ['get', '/api/admin/jobs'],
      ['get', '/api/admin/audit-log'],
      ['get', '/metrics'],
    ];
    for (const [method, route] of expected) {
      expect(paths[route], `${method.toUpperCase()} ${route}`).toHaveProperty(method);
    }
    const trigger = paths['/api/trigger/ci']!.post as {
      requestBody: { content: Record<string, { schema: { required: string[] } }> };
      responses: Record<string, unknown>;
    };
    expect(trigger.requestBody.content['application/json']!.schema.required).toContain('commit');
    expect(Object.keys(trigger.responses)).toEqual(
      expect.arrayContaining(['200', '201', '400', '422']),
    );
    // A trigger needs a body, and a cancel or retry may come without one.
    const bodyRequired = (method: string, route: string) =>
      (paths[route]![method] as { requestBody: { required?: boolean } }).requestBody.required;
    expect(bodyRequired('post', '/api/trigger/ci')).toBe(true);
    expect(bodyRequired('post', '/api/job/{job_id}/cancel')).toBe(false);
    expect(bodyRequired('post', '/api/job/{job_id}/retry')).toBe(false);
    expect(doc.body.components.securitySchemes.bearerAuth).toMatchObject({
      type: 'http',
      scheme: 'bearer',
    });
    expect(doc.body.components.securitySchemes.bearerAuth.description).toContain('OIDC');
  });

  it('API reference page renders the document', async () => {
    const page = await server.request('GET', '/api/docs/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.text).toContain('swagger-ui');
    const initializer = await server.request('GET', '/api/docs/static/swagger-initializer.js');
    expect(initializer.status).toBe(200);
    const json = await server.request('GET', '/api/docs/json');
    expect(json.status).toBe(200);
    expect(json.body.paths).toHaveProperty('/api/job/{job_id}');
  });
});
