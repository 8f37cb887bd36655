/**
 * Checks the running API against the OpenAPI document it serves. Every documented operation
 * gets valid and invalid requests over HTTP. Each response status must be one the document
 * lists for the operation, and each body must match the schema documented for that status.
 * Every route that Fastify registers under /api must be documented too.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../src/api/errors.js';
import { signBody } from '../../src/github/webhook.js';
import { setStateVariable } from '../../src/store/state-variables.js';
import { startGitHubStandin, type GitHubStandin } from '../support/github-standin.js';
import { startTestServer, type TestServer } from '../support/server.js';

// ajv-formats is CommonJS, so under NodeNext its function is the default export's `default`.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const OTHER_COMMIT = 'fedcba9876543210fedcba9876543210fedcba98';
const WEBHOOK_SECRET = 'contract-webhook-secret';
const UNKNOWN_JOB = 'ci-00000000';

interface MediaType {
  schema?: object;
}

interface DocumentedResponse {
  description?: string;
  content?: Record<string, MediaType>;
}

interface Operation {
  requestBody?: { required?: boolean; content?: Record<string, MediaType> };
  responses: Record<string, DocumentedResponse>;
  security?: unknown[];
}

interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
}

interface RequestOptions {
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

// The schemas of the document check the bodies, so the tests read them untyped.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = { status: number; body: any; headers: Headers; text: string };

/** `METHOD /openapi/path`, e.g. `GET /api/job/{job_id}`. */
type OperationKey = string;

describe('OpenAPI contract', () => {
  let standin: GitHubStandin;
  let server: TestServer;
  let document: OpenApiDocument;
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  const validators = new Map<string, ValidateFunction>();
  /** Statuses that each operation returned during the run. */
  const seen = new Map<OperationKey, Set<number>>();
  let admin: string;
  let read: string;
  let trigger: string;
  let agent: string;
  let otherAgent: string;

  beforeAll(async () => {
    standin = await startGitHubStandin();
    server = await startTestServer({
      GITHUB_TOKEN: standin.token,
      GITHUB_REPOSITORY: standin.repository,
      GITHUB_API_URL: standin.url,
      GITHUB_SYNC_INTERVAL: '0',
      GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET,
    });
    admin = server.adminToken;
    read = await server.token('read');
    trigger = await server.token('trigger');
    agent = await server.token('agent');
    otherAgent = await server.token('agent');
    const response = await server.request('GET', '/api/openapi.json');
    expect(response.status).toBe(200);
    document = response.body as OpenApiDocument;
  });
  afterAll(async () => {
    await server.close();
    await standin.close();
  });

  function operation(key: OperationKey): Operation {
    const [method, path] = key.split(' ') as [string, string];
    const found = document.paths[path]?.[method.toLowerCase()];
    if (found === undefined) throw new Error(`the OpenAPI document has no operation ${key}`);
    return found;
  }

  function validatorFor(key: OperationKey, status: number, schema: object): ValidateFunction {
    const id = `${key} ${status}`;
    let validate = validators.get(id);
    if (validate === undefined) {
      validate = ajv.compile(schema);
      validators.set(id, validate);
    }
    return validate;
  }

  /** Checks that the reply's status is documented for the operation and its body matches. */
  function expectDocumented(key: OperationKey, reply: Reply): void {
    const documented = operation(key).responses;
    const where = `${key} answered ${reply.status}: ${reply.text.slice(0, 300)}`;
    expect(Object.keys(documented), where).toContain(String(reply.status));
    const content = documented[String(reply.status)]?.content ?? {};
    const contentType = reply.headers.get('content-type') ?? '';
    const json = content['application/json'];
    if (json?.schema !== undefined) {
      expect(contentType, where).toMatch(/^application\/json/);
      const validate = validatorFor(key, reply.status, json.schema);
      const valid = validate(reply.body);
      expect(ajv.errorsText(validate.errors), where).toBe('No errors');
      expect(valid, where).toBe(true);
      return;
    }
    expect(content['text/plain'], `${where}: no schema for the status`).toBeDefined();
    expect(contentType, where).toMatch(/^text\/plain/);
  }

  async function call(key: OperationKey, url: string, options: RequestOptions = {}) {
    const [method] = key.split(' ') as [string];
    const reply = (await server.request(method, url, options)) as Reply;
    const statuses = seen.get(key) ?? new Set<number>();
    statuses.add(reply.status);
    seen.set(key, statuses);
    expectDocumented(key, reply);
    return reply;
  }

  /** Sends a valid request and checks that it gets `status`. */
  async function accept(key: OperationKey, url: string, status: number, options?: RequestOptions) {
    const reply = await call(key, url, options);
    expect(reply.status, `${key}: ${reply.text.slice(0, 300)}`).toBe(status);
    return reply;
  }

  /** Sends an invalid request and checks its status and the error's code, field and rule. */
  async function reject(
    key: OperationKey,
    url: string,
    code: ErrorCode,
    options?: RequestOptions,
  ): Promise<Reply> {
    const reply = await call(key, url, options);
    const where = `${key}: ${reply.text.slice(0, 300)}`;
    expect(reply.status, where).toBe(ERROR_CODES[code].status);
    expect(reply.body.code, where).toBe(code);
    expect(typeof reply.body.error, where).toBe('string');
    expect(typeof reply.body.field, where).toBe('string');
    expect(typeof reply.body.rule, where).toBe('string');
    expect(reply.body.request_id, where).toBe(reply.headers.get('x-request-id'));
    return reply;
  }

  const triggerCi = async (token = admin) => {
    const reply = await accept('POST /api/trigger/ci', '/api/trigger/ci', 201, {
      token,
      body: { commit: COMMIT, branch: 'main' },
    });
    return reply.body.job_id as string;
  };

  describe('triggers', () => {
    const fixedPaths = ['ci', 'integration-tests', 'deploy'];

    it('fixed trigger paths', async () => {
      for (const type of fixedPaths) {
        const key = `POST /api/trigger/${type}`;
        const url = `/api/trigger/${type}`;
        await accept(key, url, 201, { token: trigger, body: { commit: COMMIT } });
        await reject(key, url, 'validation_failed', { token: trigger, body: { branch: 'main' } });
        await reject(key, url, 'validation_failed', { token: trigger, body: { commit: 1234567 } });
        await reject(key, url, 'unauthorized', { body: { commit: COMMIT } });
        await reject(key, url, 'forbidden', { token: read, body: { commit: COMMIT } });
        await reject(key, url, 'unsupported_media_type', {
          token: trigger,
          body: 'commit=0123abc',
          headers: { 'content-type': 'text/plain' },
        });
      }
    });

    it('trigger with an Idempotency-Key', async () => {
      const key = 'POST /api/trigger/ci';
      const headers = { 'idempotency-key': randomUUID() };
      const body = { commit: COMMIT, branch: 'main' };
      const first = await accept(key, '/api/trigger/ci', 201, { token: trigger, body, headers });
      const again = await accept(key, '/api/trigger/ci', 200, { token: trigger, body, headers });
      expect(again.body.job_id).toBe(first.body.job_id);
      await reject(key, '/api/trigger/ci', 'idempotency_key_reused', {
        token: trigger,
        body: { ...body, branch: 'other' },
        headers,
      });
      await reject(key, '/api/trigger/ci', 'body_too_large', {
        token: trigger,
        body: { commit: COMMIT, params: { big: 'x'.repeat(1_100_000) } },
      });
    });

    it('generic trigger path', async () => {
      const key = 'POST /api/trigger/{type}';
      await accept(key, '/api/trigger/recovery', 201, { token: admin, body: { commit: COMMIT } });
      await reject(key, '/api/trigger/nonexistent', 'job_type_not_found', {
        token: trigger,
        body: { commit: COMMIT },
      });
      await reject(key, '/api/trigger/Bad_Type', 'validation_failed', {
        token: trigger,
        body: { commit: COMMIT },
      });
      await reject(key, '/api/trigger/rollback', 'forbidden', {
        token: trigger,
        body: { commit: COMMIT },
      });
      await reject(key, '/api/trigger/recovery', 'unauthorized', { body: { commit: COMMIT } });
    });
  });

  describe('jobs', () => {
    it('GET /api/job/{job_id}', async () => {
      const key = 'GET /api/job/{job_id}';
      const id = await triggerCi();
      await accept(key, `/api/job/${id}`, 200, { token: read });
      await reject(key, `/api/job/${UNKNOWN_JOB}`, 'job_not_found', { token: read });
      await reject(key, '/api/job/not-a-job-id', 'validation_failed', { token: read });
      await reject(key, `/api/job/${id}`, 'unauthorized');
      await reject(key, `/api/job/${id}`, 'forbidden', { token: agent });
      await reject(key, `/api/job/${id}?verbose=1`, 'validation_failed', { token: read });
    });

    it('POST /api/job/{job_id}/cancel', async () => {
      const key = 'POST /api/job/{job_id}/cancel';
      const id = await triggerCi();
      await reject(key, `/api/job/${id}/cancel`, 'validation_failed', {
        token: trigger,
        body: { reason: 5 },
      });
      await reject(key, `/api/job/${id}/cancel`, 'forbidden', { token: read, body: {} });
      await reject(key, `/api/job/${UNKNOWN_JOB}/cancel`, 'job_not_found', {
        token: trigger,
        body: {},
      });
      await accept(key, `/api/job/${id}/cancel`, 202, { token: trigger, body: { reason: 'test' } });
      await reject(key, `/api/job/${id}/cancel`, 'job_finished', { token: trigger, body: {} });
      // Without a body, as `curl -X POST` sends it.
      await accept(key, `/api/job/${await triggerCi()}/cancel`, 202, { token: trigger });
    });

    it('POST /api/job/{job_id}/retry', async () => {
      const key = 'POST /api/job/{job_id}/retry';
      const id = await triggerCi();
      await reject(key, `/api/job/${id}/retry`, 'job_active', { token: trigger, body: {} });
      await call('POST /api/job/{job_id}/cancel', `/api/job/${id}/cancel`, { token: trigger });
      await reject(key, `/api/job/${id}/retry`, 'validation_failed', {
        token: trigger,
        body: { force: true },
      });
      await reject(key, `/api/job/${id}/retry`, 'forbidden', { token: read, body: {} });
      await reject(key, `/api/job/${UNKNOWN_JOB}/retry`, 'job_not_found', {
        token: trigger,
        body: {},
      });
      await reject(key, `/api/job/${id}/retry`, 'unauthorized', { body: {} });
      await accept(key, `/api/job/${id}/retry`, 201, { token: trigger });
    });

    it('PATCH /api/job/{job_id}/status', async () => {
      const key = 'PATCH /api/job/{job_id}/status';
      const id = await triggerCi();
      const url = `/api/job/${id}/status`;
      await reject(key, url, 'validation_failed', { token: admin, body: {} });
      await reject(key, url, 'validation_failed', { token: admin, body: { status: 'done' } });
      await reject(key, url, 'forbidden', { token: trigger, body: { status: 'cancelled' } });
      await reject(key, `/api/job/${UNKNOWN_JOB}/status`, 'job_not_found', {
        token: admin,
        body: { status: 'cancelled' },
      });
      await reject(key, url, 'invalid_transition', { token: admin, body: { status: 'success' } });
      await accept(key, url, 200, { token: admin, body: { status: 'cancelled', reason: 'test' } });
    });

    it('GET /api/job/{job_id}/logs', async () => {
      const key = 'GET /api/job/{job_id}/logs';
      const id = await triggerCi();
      await accept(key, `/api/job/${id}/logs`, 200, { token: read });
      await reject(key, `/api/job/${id}/logs?task=nope`, 'task_not_found', { token: read });
      await reject(key, `/api/job/${id}/logs?attempt=1`, 'validation_failed', { token: read });
      await reject(key, `/api/job/${id}/logs?follow=maybe`, 'validation_failed', { token: read });
      await reject(key, `/api/job/${UNKNOWN_JOB}/logs`, 'job_not_found', { token: read });
      await reject(key, `/api/job/${id}/logs`, 'unauthorized');
      await reject(key, `/api/job/${id}/logs`, 'forbidden', { token: agent });
    });
  });

  describe('state, listings and health', () => {
    it('GET /api/state', async () => {
      const key = 'GET /api/state';
      await setStateVariable(server.context.store.db, 'DEPLOY_STATUS', 'ok');
      await accept(key, '/api/state', 200, { token: read });
      await reject(key, '/api/state', 'unauthorized');
      await reject(key, '/api/state', 'forbidden', { token: agent });
      await reject(key, '/api/state?name=DEPLOY_STATUS', 'validation_failed', { token: read });
    });

    it('GET /api/admin/jobs', async () => {
      const key = 'GET /api/admin/jobs';
      await triggerCi();
      await accept(key, '/api/admin/jobs?type=ci&limit=2', 200, { token: read });
      await reject(key, '/api/admin/jobs?limit=0', 'validation_failed', { token: read });
      await reject(key, '/api/admin/jobs?cursor=nonsense', 'validation_failed', { token: read });
      await reject(key, '/api/admin/jobs?status=done', 'validation_failed', { token: read });
      await reject(key, '/api/admin/jobs', 'unauthorized');
      await reject(key, '/api/admin/jobs', 'forbidden', { token: agent });
    });

    it('GET /api/admin/audit-log', async () => {
      const key = 'GET /api/admin/audit-log';
      await accept(key, '/api/admin/audit-log?limit=5', 200, { token: admin });
      await reject(key, '/api/admin/audit-log?limit=many', 'validation_failed', { token: admin });
      await reject(key, '/api/admin/audit-log?since=yesterday', 'validation_failed', {
        token: admin,
      });
      await reject(key, '/api/admin/audit-log', 'forbidden', { token: read });
      await reject(key, '/api/admin/audit-log', 'unauthorized');
    });

    it('GET /api/health/status', async () => {
      const key = 'GET /api/health/status';
      await accept(key, '/api/health/status', 200);
      await accept(key, '/api/health/status?cache=1', 200, { token: read });
      await reject(key, '/api/health/status?cache=%ZZ', 'validation_failed');
    });

    it('GET /api/health/history', async () => {
      const key = 'GET /api/health/history';
      await accept(key, '/api/health/history?limit=10', 200, { token: read });
      await reject(
        key,
        '/api/health/history?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z',
        'validation_failed',
        { token: read },
      );
      await reject(key, '/api/health/history?cursor=abc', 'validation_failed', { token: read });
      await reject(key, '/api/health/history', 'unauthorized');
      await reject(key, '/api/health/history', 'forbidden', { token: agent });
    });

    it('GET /metrics', async () => {
      const key = 'GET /metrics';
      await accept(key, '/metrics', 200, { token: read });
      await reject(key, '/metrics', 'unauthorized');
      await reject(key, '/metrics?name=slipway_jobs', 'validation_failed', { token: read });
    });
  });

  describe('recovery and rollback', () => {
    it('POST /api/recovery/execute', async () => {
      const key = 'POST /api/recovery/execute';
      const url = '/api/recovery/execute';
      await accept(key, url, 200, {
        token: admin,
        body: { procedure: 'rerun-failed', commit: OTHER_COMMIT },
      });
      await reject(key, url, 'procedure_not_found', {
        token: admin,
        body: { procedure: 'nothing-here' },
      });
      await reject(key, url, 'validation_failed', { token: admin, body: {} });
      await reject(key, url, 'validation_failed', { token: admin, body: { procedure: 7 } });
      await reject(key, url, 'forbidden', { token: trigger, body: { procedure: 'rerun-failed' } });
      await reject(key, url, 'unauthorized', { body: { procedure: 'rerun-failed' } });
    });

    it('POST /api/rollback/execute', async () => {
      const key = 'POST /api/rollback/execute';
      const url = '/api/rollback/execute';
      await reject(key, url, 'no_previous_deploy', { token: admin });
      await reject(key, url, 'validation_failed', { token: admin, body: { commit: 'xyz' } });
      await reject(key, url, 'forbidden', { token: trigger, body: { commit: COMMIT } });
      await reject(key, url, 'unauthorized', { body: { commit: COMMIT } });
      await accept(key, url, 201, { token: admin, body: { commit: COMMIT } });
    });
  });

  describe('agent API', () => {
    const workerId = 'contract-worker';
    const registration = {
      worker_id: workerId,
      name: workerId,
      session: 'session-contract-1',
      hostname: 'contract-host',
      executors: ['docker', 'local'],
      capacity: 4,
    };

    /** Triggers a ci job and claims its task. Returns the task id and the lease attempt. */
    async function claimTask(): Promise<{ taskId: string; attempt: number }> {
      await triggerCi();
      const claim = await accept(
        'POST /api/agent/workers/{worker_id}/claim',
        `/api/agent/workers/${workerId}/claim`,
        200,
        { token: agent, body: { max: 1, wait_seconds: 0, session: registration.session } },
      );
      expect(claim.body.tasks).toHaveLength(1);
      return { taskId: claim.body.tasks[0].task_id, attempt: claim.body.tasks[0].attempt };
    }

    it('POST /api/agent/workers', async () => {
      const key = 'POST /api/agent/workers';
      const url = '/api/agent/workers';
      await accept(key, url, 200, { token: agent, body: registration });
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...registration, name: undefined },
      });
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...registration, capacity: '4' },
      });
      await reject(key, url, 'forbidden', { token: trigger, body: registration });
      await reject(key, url, 'unauthorized', { body: registration });
      await reject(key, url, 'worker_id_in_use', {
        token: agent,
        body: { ...registration, session: 'session-contract-2' },
      });
    });

    it('POST /api/agent/workers/{worker_id}/claim', async () => {
      const key = 'POST /api/agent/workers/{worker_id}/claim';
      await claimTask();
      await reject(key, '/api/agent/workers/nobody/claim', 'worker_not_found', {
        token: agent,
        body: { max: 1, wait_seconds: 0 },
      });
      await reject(key, `/api/agent/workers/${workerId}/claim`, 'validation_failed', {
        token: agent,
        body: { max: 0 },
      });
      await reject(key, `/api/agent/workers/${workerId}/claim`, 'worker_session_replaced', {
        token: agent,
        body: { max: 1, wait_seconds: 0, session: 'session-contract-9' },
      });
      await reject(key, `/api/agent/workers/${workerId}/claim`, 'worker_owned', {
        token: otherAgent,
        body: { max: 1, wait_seconds: 0 },
      });
      await reject(key, `/api/agent/workers/${workerId}/claim`, 'forbidden', {
        token: read,
        body: { max: 1 },
      });
    });

    it('POST /api/agent/tasks/{task_id}/heartbeat', async () => {
      const key = 'POST /api/agent/tasks/{task_id}/heartbeat';
      const { taskId, attempt } = await claimTask();
      const url = `/api/agent/tasks/${taskId}/heartbeat`;
      await accept(key, url, 200, { token: agent, body: { worker_id: workerId, attempt } });
      await reject(key, url, 'lease_lost', {
        token: agent,
        body: { worker_id: workerId, attempt: attempt + 1 },
      });
      await reject(key, url, 'validation_failed', { token: agent, body: { worker_id: workerId } });
      await reject(key, '/api/agent/tasks/ci-00000000.1.0/heartbeat', 'task_not_found', {
        token: agent,
        body: { worker_id: workerId, attempt },
      });
      await reject(key, '/api/agent/tasks/not-a-task/heartbeat', 'validation_failed', {
        token: agent,
        body: { worker_id: workerId, attempt },
      });
      await reject(key, url, 'unauthorized', { body: { worker_id: workerId, attempt } });
    });

    it('POST /api/agent/tasks/{task_id}/logs', async () => {
      const key = 'POST /api/agent/tasks/{task_id}/logs';
      const { taskId, attempt } = await claimTask();
      const url = `/api/agent/tasks/${taskId}/logs`;
      const lease = { worker_id: workerId, attempt };
      await accept(key, url, 200, { token: agent, body: { ...lease, offset: 0, data: 'hello\n' } });
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...lease, offset: 100, data: 'gap' },
      });
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...lease, offset: -1, data: 'x' },
      });
      await reject(key, url, 'lease_lost', {
        token: agent,
        body: { ...lease, attempt: attempt + 1, offset: 6, data: 'x' },
      });
      await reject(key, url, 'forbidden', { token: read, body: { ...lease, offset: 6, data: '' } });
    });

    it('POST /api/agent/tasks/{task_id}/finish', async () => {
      const key = 'POST /api/agent/tasks/{task_id}/finish';
      const { taskId, attempt } = await claimTask();
      const url = `/api/agent/tasks/${taskId}/finish`;
      const report = { worker_id: workerId, attempt, status: 'success', duration_ms: 10 };
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...report, duration_ms: undefined },
      });
      await reject(key, url, 'validation_failed', {
        token: agent,
        body: { ...report, exit_code: 1 },
      });
      await reject(key, url, 'worker_owned', { token: otherAgent, body: report });
      await accept(key, url, 200, { token: agent, body: { ...report, exit_code: 0 } });
      await reject(key, url, 'lease_lost', { token: agent, body: report });
    });

    it('POST /api/agent/tasks/{task_id}/release', async () => {
      const key = 'POST /api/agent/tasks/{task_id}/release';
      const { taskId, attempt } = await claimTask();
      const url = `/api/agent/tasks/${taskId}/release`;
      const lease = { worker_id: workerId, attempt };
      await reject(key, url, 'validation_failed', { token: agent, body: lease });
      await accept(key, url, 200, { token: agent, body: { ...lease, reason: 'stopping' } });
      await reject(key, url, 'lease_lost', { token: agent, body: { ...lease, reason: 'again' } });
      await reject(key, url, 'unauthorized', { body: { ...lease, reason: 'stopping' } });
    });

    it('POST /api/agent/workers/{worker_id}/leftovers', async () => {
      const key = 'POST /api/agent/workers/{worker_id}/leftovers';
      const body = { killed: [{ pid: 4242, task_id: null }], failed: [] };
      await accept(key, `/api/agent/workers/${workerId}/leftovers`, 200, { token: agent, body });
      await reject(key, '/api/agent/workers/nobody/leftovers', 'worker_not_found', {
        token: agent,
        body,
      });
      await reject(key, `/api/agent/workers/${workerId}/leftovers`, 'validation_failed', {
        token: agent,
        body: { killed: [{ pid: 0, task_id: null }], failed: [] },
      });
      await reject(key, `/api/agent/workers/${workerId}/leftovers`, 'forbidden', {
        token: trigger,
        body,
      });
    });

    it('POST /api/agent/workers/{worker_id}/status', async () => {
      const key = 'POST /api/agent/workers/{worker_id}/status';
      const url = `/api/agent/workers/${workerId}/status`;
      await reject(key, url, 'validation_failed', { token: agent, body: { status: 'gone' } });
      await reject(key, '/api/agent/workers/nobody/status', 'worker_not_found', {
        token: agent,
        body: { status: 'draining' },
      });
      await reject(key, url, 'forbidden', { token: read, body: { status: 'draining' } });
      await accept(key, url, 200, { token: agent, body: { status: 'draining' } });
      await accept(key, url, 200, { token: agent, body: { status: 'offline' } });
      await reject(key, url, 'invalid_transition', { token: agent, body: { status: 'online' } });
    });
  });

  describe('GitHub', () => {
    it('POST /api/sync-variables', async () => {
      const key = 'POST /api/sync-variables';
      const url = '/api/sync-variables';
      await setStateVariable(server.context.store.db, 'LAST_DEPLOYED_COMMIT', COMMIT);
      await accept(key, url, 200, { token: admin, body: { names: ['LAST_DEPLOYED_COMMIT'] } });
      await accept(key, url, 200, { token: admin });
      await reject(key, url, 'validation_failed', { token: admin, body: { names: ['NOPE'] } });
      await reject(key, url, 'validation_failed', { token: admin, body: { names: [] } });
      await reject(key, url, 'forbidden', { token: trigger, body: {} });
      await reject(key, url, 'unauthorized', { body: {} });
    });

    it('POST /api/webhooks/github', async () => {
      const key = 'POST /api/webhooks/github';
      const url = '/api/webhooks/github';
      const deliver = (event: string, payload: unknown, headers: Record<string, string> = {}) => {
        const body = JSON.stringify(payload);
        return {
          body,
          headers: {
            'x-github-event': event,
            'x-github-delivery': randomUUID(),
            'x-hub-signature-256': signBody(WEBHOOK_SECRET, body),
            ...headers,
          },
        };
      };
      const push = {
        ref: 'refs/heads/main',
        after: OTHER_COMMIT,
        deleted: false,
        repository: { full_name: standin.repository },
      };
      await accept(key, url, 200, deliver('ping', { zen: 'Keep it logically awesome.' }));
      await accept(key, url, 201, deliver('push', push));
      await reject(key, url, 'invalid_signature', {
        ...deliver('push', push),
        headers: { ...deliver('push', push).headers, 'x-hub-signature-256': 'sha256=00' },
      });
      await reject(key, url, 'validation_failed', {
        ...deliver('push', push),
        headers: { 'x-hub-signature-256': signBody(WEBHOOK_SECRET, JSON.stringify(push)) },
      });
      await reject(
        key,
        url,
        'unsupported_media_type',
        deliver('push', push, { 'content-type': 'text/plain' }),
      );
    });
  });

  it('required bodies are required', async () => {
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const [method, documented] of Object.entries(operations)) {
        const required = documented.requestBody?.required;
        if (required === undefined) continue;
        const key = `${method.toUpperCase()} ${path}`;
        const reply = await call(key, examplePath(path), { token: admin });
        const where = `${key} without a body: ${reply.text.slice(0, 300)}`;
        if (required) {
          expect(reply.status, where).toBe(400);
          expect(reply.body.field, where).toBe('body');
        } else {
          expect(reply.status, where).not.toBe(400);
        }
      }
    }
  });

  it('non-JSON and oversized bodies', async () => {
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const [method, documented] of Object.entries(operations)) {
        if (documented.requestBody === undefined) continue;
        const key = `${method.toUpperCase()} ${path}`;
        await reject(key, examplePath(path), 'unsupported_media_type', {
          token: admin,
          body: 'status=cancelled',
          headers: { 'content-type': 'text/plain' },
        });
        await reject(key, examplePath(path), 'body_too_large', {
          token: admin,
          body: { padding: 'x'.repeat(2_000_000) },
        });
      }
    }
  });

  it('every operation got a success and a rejection', () => {
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const method of Object.keys(operations)) {
        const key = `${method.toUpperCase()} ${path}`;
        const statuses = [...(seen.get(key) ?? [])];
        expect(
          statuses.some((status) => status < 300),
          `${key} got no 2xx`,
        ).toBe(true);
        expect(
          statuses.some((status) => status >= 400 && status < 500),
          `${key} got no 4xx`,
        ).toBe(true);
      }
    }
  });

  it('every route under /api is documented', () => {
    const documented = new Set<string>();
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const method of Object.keys(operations)) {
        documented.add(`${method.toUpperCase()} ${path}`);
      }
    }
    const registered = listRoutes(server.api.app.printRoutes({ commonPrefix: false }));
    const undocumented = registered.filter(({ method, path }) => {
      const openApiPath = path.replace(/:(\w+)/g, '{$1}');
      // The document and its viewer describe the API and are not part of it.
      if (path === '/api/openapi.json' || path.startsWith('/api/docs')) return false;
      if (!path.startsWith('/api/')) return false;
      // Fastify serves HEAD for every GET route itself.
      if (method === 'HEAD') return !documented.has(`GET ${openApiPath}`);
      return !documented.has(`${method} ${openApiPath}`);
    });
    expect(registered.length).toBeGreaterThan(20);
    expect(undocumented).toEqual([]);
  });
});

/** Fills the parameters of an OpenAPI path with values of the right form. */
function examplePath(path: string): string {
  return path
    .replace('{type}', 'ci')
    .replace('{job_id}', UNKNOWN_JOB)
    .replace('{worker_id}', 'example-worker')
    .replace('{task_id}', `${UNKNOWN_JOB}.1.0`);
}

/**
 * Parses the tree of Fastify's `printRoutes({ commonPrefix: false })`, whose lines look like
 * `│   ├── /cancel (POST)`. Each level indents by four characters, and a line's path continues
 * the path of the line above it one level up.
 */
function listRoutes(tree: string): Array<{ method: string; path: string }> {
  const routes: Array<{ method: string; path: string }> = [];
  const prefixes: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^([│ ]*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (match === null) continue;
    const depth = match[1]!.length / 4;
    const path = (prefixes[depth - 1] ?? '') + match[2]!;
    prefixes[depth] = path;
    prefixes.length = depth + 1;
    for (const method of match[3]?.split(', ') ?? []) routes.push({ method, path });
  }
  return routes;
}

describe('OpenAPI contract, rate limit', () => {
  let server: TestServer;
  let document: OpenApiDocument;

  beforeAll(async () => {
    server = await startTestServer({ API_RATE_LIMIT: '1', GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET });
    // Also spends the budget of requests without a token from this address.
    document = (await server.request('GET', '/api/openapi.json')).body as OpenApiDocument;
  });
  afterAll(async () => {
    await server.close();
  });

  it('every operation documents 429', async () => {
    const token = server.adminToken;
    const spent = await server.request('GET', '/api/state', { token });
    expect(spent.status).toBe(200);
    const undocumented: string[] = [];
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const [method, documented] of Object.entries(operations)) {
        const key = `${method.toUpperCase()} ${path}`;
        const options = documented.requestBody === undefined ? { token } : { token, body: {} };
        const reply = await server.request(method.toUpperCase(), examplePath(path), options);
        expect(reply.status, `${key}: ${reply.text.slice(0, 200)}`).toBe(429);
        expect(reply.body.code, key).toBe('rate_limited');
        if (documented.responses['429'] === undefined) undocumented.push(key);
      }
    }
    expect(undocumented).toEqual([]);
  });
});

describe('OpenAPI contract, stopping server', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.context.store.close();
  });

  /** Opens a connection and sends the request line and Host, but not the end of the headers. */
  async function startRequest(requestLine: string) {
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(text)));
    socket.write(`${requestLine}\r\nHost: contract\r\n`);
    return { socket, closed };
  }

  it('health status returns a documented 503', async () => {
    const document = (await server.request('GET', '/api/openapi.json')).body as OpenApiDocument;
    const documented = document.paths['/api/health/status']!.get!.responses['503'];
    const schema = documented?.content?.['application/json']?.schema;
    expect(schema).toBeDefined();
    const token = server.adminToken;
    const registered = await server.request('POST', '/api/agent/workers', {
      token,
      body: { name: 'idle-worker', hostname: 'contract', executors: ['local'], capacity: 1 },
    });
    expect(registered.status).toBe(200);
    // A claim that waits for a task keeps the server stopping while the request arrives.
    const claim = server.request('POST', '/api/agent/workers/idle-worker/claim', {
      token,
      body: { max: 1, wait_seconds: 5 },
    });
    const health = await startRequest('GET /api/health/status HTTP/1.1');
    const state = await startRequest('GET /api/state HTTP/1.1');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stopped = server.api.stop();
    await new Promise((resolve) => setTimeout(resolve, 50));
    health.socket.write('\r\n');
    state.socket.write(`Authorization: Bearer ${token}\r\n\r\n`);
    const [head, text] = (await health.closed).split('\r\n\r\n') as [string, string];
    const [stateHead, stateText] = (await state.closed).split('\r\n\r\n') as [string, string];
    await claim;
    await stopped;

    // A route without a 503 of its own responds with the documented error shape.
    expect(stateHead).toMatch(/^HTTP\/1\.1 503 /);
    const stateSchema =
      document.paths['/api/state']!.get!.responses['503']?.content?.['application/json']?.schema;
    expect(stateSchema).toBeDefined();
    const stateAjv = new Ajv({ allErrors: true, strict: false });
    addFormats(stateAjv);
    const validateState = stateAjv.compile(stateSchema!);
    const stateValid = validateState(JSON.parse(stateText));
    expect(stateAjv.errorsText(validateState.errors)).toBe('No errors');
    expect(stateValid).toBe(true);

    expect(head).toMatch(/^HTTP\/1\.1 503 /);
    const body = JSON.parse(text) as { code: string; rule: string };
    expect(body.code).toBe('service_unavailable');
    expect(body.rule).toBe('stopping');
    const ajv = new Ajv({ allErrors: true, strict: false });
    addFormats(ajv);
    const validate = ajv.compile(schema!);
    const valid = validate(body);
    expect(ajv.errorsText(validate.errors)).toBe('No errors');
    expect(valid).toBe(true);
  });
});
