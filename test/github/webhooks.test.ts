import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signBody } from '../../src/github/webhook.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SECRET = 'webhook-test-secret';
const REPOSITORY = 'Codertocat/Hello-World';

interface WebhookDefinition {
  name: string;
  examples: Array<Record<string, unknown>>;
}

const definitions = createRequire(import.meta.url)(
  '@octokit/webhooks-examples',
) as WebhookDefinition[];

function example(name: string, pick: (payload: Record<string, unknown>) => boolean) {
  const found = definitions.find((d) => d.name === name)?.examples.find(pick);
  if (found === undefined) throw new Error(`no ${name} example matches`);
  return structuredClone(found);
}

/** A push of one new commit to the `master` branch of Codertocat/Hello-World. */
const branchPush = () => example('push', (p) => p.ref === 'refs/heads/master' && !p.deleted);
const tagPush = () => example('push', (p) => p.ref === 'refs/tags/simple-tag' && !p.deleted);
/** The examples delete only tags, so the branch deletion is the tag deletion on a branch. */
const branchDeletion = () => ({
  ...example('push', (p) => p.ref === 'refs/tags/simple-tag' && p.deleted === true),
  ref: 'refs/heads/feature-x',
});
const ping = () => example('ping', (p) => p.repository !== undefined);

interface Delivery {
  event: string;
  body: string;
  delivery?: string;
  signature?: string | null;
  contentType?: string;
}

async function deliver(server: TestServer, options: Delivery) {
  const headers: Record<string, string> = {
    'content-type': options.contentType ?? 'application/json',
    'x-github-event': options.event,
    'x-github-delivery': options.delivery ?? randomUUID(),
    'user-agent': 'GitHub-Hookshot/044aadd',
  };
  if (options.signature !== null) {
    headers['x-hub-signature-256'] = options.signature ?? signBody(SECRET, options.body);
  }
  return server.request('POST', '/api/webhooks/github', { body: options.body, headers });
}

async function countRows(server: TestServer) {
  const db = server.context.store.db;
  const count = async (table: 'jobs' | 'audit_log' | 'github_webhook_deliveries') =>
    Number(
      (
        await db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  return {
    jobs: await count('jobs'),
    audit: await count('audit_log'),
    deliveries: await count('github_webhook_deliveries'),
  };
}

describe('POST /api/webhooks/github', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      GITHUB_WEBHOOK_SECRET: SECRET,
      GITHUB_REPOSITORY: REPOSITORY,
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it('answers ping', async () => {
    const payload = ping();
    const response = await deliver(server, { event: 'ping', body: JSON.stringify(payload) });
    expect(response.status).toBe(200);
    expect(response.body.outcome).toBe('ping');
    expect(response.body.zen).toBe(payload.zen);
    const audit = await server.request('GET', '/api/admin/audit-log?action=webhook_received', {
      token: server.adminToken,
    });
    expect(audit.body.entries.some((e: { actor: string }) => e.actor === 'github-webhook')).toBe(
      true,
    );
  });

  it('queues ci for a branch push', async () => {
    const payload = branchPush();
    const delivery = randomUUID();
    const response = await deliver(server, {
      event: 'push',
      delivery,
      body: JSON.stringify(payload, null, 2),
    });
    expect(response.status).toBe(201);
    expect(response.body.outcome).toBe('queued');
    expect(response.body.duplicate).toBe(false);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
      token: server.adminToken,
    });
    expect(job.body.type).toBe('ci');
    expect(job.body.commit).toBe(payload.after);
    expect(job.body.branch).toBe('master');
    const audit = await server.request('GET', `/api/admin/audit-log?job_id=${job.body.id}`, {
      token: server.adminToken,
    });
    const triggered = audit.body.entries.find(
      (e: { action: string }) => e.action === 'job_triggered',
    );
    expect(triggered.actor).toBe('github-webhook');
    expect(triggered.details.webhook_delivery).toBe(delivery);
  });

  it('handles a redelivery once', async () => {
    const body = JSON.stringify(branchPush());
    const delivery = randomUUID();
    const first = await deliver(server, { event: 'push', delivery, body });
    const before = await countRows(server);
    const second = await deliver(server, { event: 'push', delivery, body });
    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(second.body.duplicate).toBe(true);
    expect(second.body.job_id).toBe(first.body.job_id);
    expect(await countRows(server)).toEqual(before);
  });

  it('queues a replayed push once', async () => {
    const body = JSON.stringify(branchPush(), null, 1);
    const first = await deliver(server, { event: 'push', body });
    const jobsBefore = (await countRows(server)).jobs;
    const replay = await deliver(server, { event: 'push', body });
    expect(first.status).toBe(201);
    expect(replay.status).toBe(200);
    expect(replay.body.duplicate).toBe(true);
    expect(replay.body.job_id).toBe(first.body.job_id);
    expect((await countRows(server)).jobs).toBe(jobsBefore);

    // The same push made again later has another pushed_at, so it queues a new job.
    const payload = branchPush();
    (payload.repository as { pushed_at: number }).pushed_at += 60;
    const again = await deliver(server, { event: 'push', body: JSON.stringify(payload, null, 1) });
    expect(again.status).toBe(201);
    expect(again.body.job_id).not.toBe(first.body.job_id);
  });

  it('ignores a branch deletion', async () => {
    const before = await countRows(server);
    const response = await deliver(server, {
      event: 'push',
      body: JSON.stringify(branchDeletion()),
    });
    expect(response.status).toBe(200);
    expect(response.body.outcome).toBe('ignored');
    expect(response.body.reason).toContain('refs/heads/feature-x was deleted');
    const after = await countRows(server);
    expect(after.jobs).toBe(before.jobs);
    expect(after.deliveries).toBe(before.deliveries + 1);
  });

  it('ignores a tag push by default', async () => {
    const before = await countRows(server);
    const response = await deliver(server, { event: 'push', body: JSON.stringify(tagPush()) });
    expect(response.status).toBe(200);
    expect(response.body.outcome).toBe('ignored');
    expect(response.body.reason).toContain('GITHUB_WEBHOOK_TAGS');
    expect((await countRows(server)).jobs).toBe(before.jobs);
  });

  it('ignores pushes of another repository', async () => {
    const payload = branchPush();
    (payload.repository as { full_name: string }).full_name = 'someone/else';
    const response = await deliver(server, { event: 'push', body: JSON.stringify(payload) });
    expect(response.body.outcome).toBe('ignored');
    expect(response.body.reason).toContain('someone/else');
  });

  it('rejects a bad signature with 401 and changes nothing', async () => {
    const before = await countRows(server);
    const response = await deliver(server, {
      event: 'push',
      body: JSON.stringify(branchPush()),
      signature: signBody('another-secret', JSON.stringify(branchPush())),
    });
    expect(response.status).toBe(401);
    expect(response.body.code).toBe('invalid_signature');
    expect(response.body.field).toBe('x-hub-signature-256');
    expect(await countRows(server)).toEqual(before);
  });

  it('rejects a re-serialised payload', async () => {
    const original = JSON.stringify(branchPush(), null, 2);
    const reserialised = JSON.stringify(JSON.parse(original));
    expect(reserialised).not.toBe(original);
    const before = await countRows(server);
    const response = await deliver(server, {
      event: 'push',
      body: reserialised,
      signature: signBody(SECRET, original),
    });
    expect(response.status).toBe(401);
    expect(await countRows(server)).toEqual(before);
  });

  it('rejects a missing signature', async () => {
    const response = await deliver(server, {
      event: 'ping',
      body: JSON.stringify(ping()),
      signature: null,
    });
    expect(response.status).toBe(401);
    expect(response.body.rule).toBe('required');
  });

  it('accepts form-encoded deliveries', async () => {
    const payload = branchPush();
    payload.after = 'f'.repeat(40);
    const body = new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
    const response = await deliver(server, {
      event: 'push',
      body,
      contentType: 'application/x-www-form-urlencoded',
    });
    expect(response.status).toBe(201);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
      token: server.adminToken,
    });
    expect(job.body.commit).toBe('f'.repeat(40));
  });

  it('requires the GitHub headers', async () => {
    const body = JSON.stringify(ping());
    const response = await server.request('POST', '/api/webhooks/github', {
      body,
      headers: { 'x-hub-signature-256': signBody(SECRET, body), 'x-github-event': 'ping' },
    });
    expect(response.status).toBe(400);
    expect(response.body.field).toContain('x-github-delivery');
  });

  it('leaves JSON parsing of other routes alone', async () => {
    const trigger = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abcdef1', branch: 'main' },
    });
    expect(trigger.status).toBe(201);
    const invalid = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: '{"commit":',
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body.code).toBe('invalid_json');
  });
});

describe('webhook settings', () => {
  it('queues tag pushes with GITHUB_WEBHOOK_TAGS=true', async () => {
    const server = await startTestServer({
      GITHUB_WEBHOOK_SECRET: SECRET,
      GITHUB_WEBHOOK_TAGS: 'true',
    });
    try {
      const response = await deliver(server, { event: 'push', body: JSON.stringify(tagPush()) });
      expect(response.status).toBe(201);
      const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
        token: server.adminToken,
      });
      expect(job.body.branch).toBeNull();
      expect(job.body.params).toEqual({ tag: 'simple-tag' });
    } finally {
      await server.close();
    }
  });

  it('answers 503 without GITHUB_WEBHOOK_SECRET', async () => {
    const server = await startTestServer();
    try {
      const body = JSON.stringify(ping());
      const response = await server.request('POST', '/api/webhooks/github', {
        body,
        headers: {
          'x-github-event': 'ping',
          'x-github-delivery': randomUUID(),
          'x-hub-signature-256': signBody(SECRET, body),
        },
      });
      expect(response.status).toBe(503);
      expect(response.body.code).toBe('webhook_not_configured');
      expect(response.body.error).toContain('GITHUB_WEBHOOK_SECRET');
    } finally {
      await server.close();
    }
  });
});

describe('webhook body limit', () => {
  const WEBHOOK_LIMIT = 25 * 1024 * 1024;
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      GITHUB_WEBHOOK_SECRET: SECRET,
      GITHUB_REPOSITORY: REPOSITORY,
    });
  });
  afterAll(async () => {
    await server.close();
  });

  /** Builds a branch push whose commit message pads the JSON body to exactly `bytes`. */
  function pushOfSize(bytes: number): string {
    const payload = branchPush();
    const headCommit = payload.head_commit as Record<string, unknown>;
    headCommit.message = '';
    const padding = bytes - Buffer.byteLength(JSON.stringify(payload));
    headCommit.message = 'x'.repeat(padding);
    const body = JSON.stringify(payload);
    expect(Buffer.byteLength(body)).toBe(bytes);
    return body;
  }

  it('accepts a push above API_BODY_LIMIT', async () => {
    const body = pushOfSize(2 * 1024 * 1024);
    const response = await deliver(server, { event: 'push', body });
    expect(response.status).toBe(201);
    expect(response.body.outcome).toBe('queued');
  });

  it('accepts a push at 25 MB', async () => {
    const response = await deliver(server, { event: 'push', body: pushOfSize(WEBHOOK_LIMIT) });
    expect(response.status).toBe(201);
  });

  it('rejects a push over 25 MB', async () => {
    const response = await deliver(server, { event: 'push', body: pushOfSize(WEBHOOK_LIMIT + 1) });
    expect(response.status).toBe(413);
    expect(response.body.code).toBe('body_too_large');
    expect(response.body.error).toBe(
      "the body is larger than the limit of 26214400 bytes (GitHub's 25 MB cap on webhook payloads)",
    );
  });

  it('names API_BODY_LIMIT on other routes', async () => {
    const response = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: JSON.stringify({ commit: 'abc1234', params: { blob: 'x'.repeat(2 * 1024 * 1024) } }),
    });
    expect(response.status).toBe(413);
    expect(response.body.error).toBe(
      'the body is larger than the limit of 1048576 bytes (API_BODY_LIMIT)',
    );
  });
});
