/**
 * GitHub endpoints: `POST /api/sync-variables` and the webhook receiver
 * `POST /api/webhooks/github`. Registering them also starts the process's GitHub service
 * (status sender, scheduled sync) when the server is ready, and stops it when it closes.
 */
import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../app/context.js';
import { ApiError } from '../api/errors.js';
import { treatNoBodyAsEmptyObject } from '../api/json-body.js';
import { auditContext } from '../api/request-context.js';
import { ErrorSchema } from '../api/schemas.js';
import { branchNameProblem } from '../jobs/refs.js';
import { triggerJob } from '../orchestrator/trigger.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { listStateVariables } from '../store/state-variables.js';
import { nowIso } from '../util/time.js';
import { gitHubDisabledReason } from './client.js';
import { GitHubService } from './service.js';
import { syncVariables } from './variables.js';
import { decidePush, verifySignature, type PushPayload } from './webhook.js';
import { clientAddress } from '../api/request-context.js';

/**
 * GitHub caps webhook payloads at 25 MB, and the payload of a large push can exceed
 * API_BODY_LIMIT, so the webhook accepts what GitHub may send.
 */
const WEBHOOK_BODY_LIMIT = 25 * 1024 * 1024;
const WEBHOOK_BODY_LIMIT_SOURCE = "GitHub's 25 MB cap on webhook payloads";
const WEBHOOK_ACTOR = 'github-webhook';

export async function registerGitHubRoutes(
  app: FastifyInstance,
  context: AppContext,
): Promise<void> {
  const service = (context.github ??= new GitHubService(context));
  app.addHook('onReady', async () => service.start());
  app.addHook('onClose', async () => service.stop());
  registerSyncRoute(app, context, service);
  await app.register(async (scope) => registerWebhookRoute(scope, context));
}

const SyncBody = Type.Object(
  {
    names: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 255 }), {
        minItems: 1,
        maxItems: 500,
        description: 'sync only these state variables (default: all)',
      }),
    ),
  },
  { additionalProperties: false },
);

const SyncResult = Type.Object({
  name: Type.String(),
  outcome: Type.Union(['created', 'updated', 'unchanged', 'failed'].map((o) => Type.Literal(o))),
  reason: Type.Optional(Type.String()),
});

const SyncReply = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('partial'), Type.Literal('failed')], {
    description: '`ok` when no variable failed',
  }),
  repository: Type.String(),
  results: Type.Array(SyncResult),
  variables: Type.Record(Type.String(), Type.String()),
  count: Type.Integer(),
  timestamp: Type.String(),
});

function registerSyncRoute(app: FastifyInstance, context: AppContext, service: GitHubService) {
  app.post(
    '/api/sync-variables',
    {
      schema: {
        tags: ['state'],
        summary: 'Push state variables to the repository’s GitHub Actions variables',
        description:
          'Creates missing variables, updates changed ones and leaves equal ones alone. ' +
          'Each variable is reported as created, updated, unchanged or failed (with the reason).',
        security: [{ bearerAuth: [] }],
        body: SyncBody,
        response: {
          200: SyncReply,
          400: ErrorSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          503: ErrorSchema,
        },
      },
      config: { roles: ['admin'] },
      // A POST without a body (`curl -X POST`) syncs every variable, as `{}` does.
      preValidation: treatNoBodyAsEmptyObject,
    },
    async (request) => {
      const client = service.client;
      if (client === undefined) {
        throw new ApiError(
          'github_not_configured',
          `cannot sync variables: ${gitHubDisabledReason(context.config)}; set it and restart`,
          'GITHUB_TOKEN',
          'configured',
        );
      }
      const names = (request.body as { names?: string[] } | undefined)?.names;
      if (names !== undefined) await checkNamesExist(context, names);
      return syncVariables(context, client, {
        names,
        audit: auditContext(request),
        auditUnchanged: true,
      });
    },
  );
}

/** Maximum number of unknown names that the 400 of a sync lists. */
const MAX_NAMES_IN_MESSAGE = 10;

async function checkNamesExist(context: AppContext, names: string[]): Promise<void> {
  const known = new Set((await listStateVariables(context.store.db)).map((row) => row.name));
  const missing = names.filter((name) => !known.has(name));
  if (missing.length > 0) {
    // Quoted, so that blanks and commas in a name stay visible, and cut, because a body may
    // list 500 names of 255 characters.
    const shown = missing.slice(0, MAX_NAMES_IN_MESSAGE).map((name) => JSON.stringify(name));
    const more =
      missing.length > MAX_NAMES_IN_MESSAGE
        ? ` or ${missing.length - MAX_NAMES_IN_MESSAGE} more`
        : '';
    throw new ApiError(
      'validation_failed',
      `names: no state variable named ${shown.join(', ')}${more}; GET /api/state lists the state variables`,
      'names',
      'exists',
    );
  }
}

const WebhookHeaders = Type.Object({
  'x-github-event': Type.String({ pattern: '^[a-z_]{1,64}$', description: 'the event name' }),
  'x-github-delivery': Type.String({
    pattern: '^[A-Za-z0-9-]{1,100}$',
    description: 'unique id of the delivery; a redelivery repeats it',
  }),
  'x-hub-signature-256': Type.Optional(Type.String({ maxLength: 100 })),
});

const WebhookReply = Type.Object(
  {
    delivery: Type.String(),
    event: Type.String(),
    outcome: Type.String({ description: '`ping`, `queued` or `ignored`' }),
    duplicate: Type.Boolean({ description: 'the delivery was handled before; nothing changed' }),
    job_id: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    status: Type.Optional(Type.String()),
    reason: Type.Optional(Type.String()),
    zen: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

/**
 * Registers the webhook in its own encapsulated scope, because verifying the signature needs
 * the raw bytes of the body. Here JSON and form bodies are kept as Buffers, and every other
 * route keeps the normal JSON parser.
 */
async function registerWebhookRoute(scope: FastifyInstance, context: AppContext) {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser(
    ['application/json', 'application/x-www-form-urlencoded'],
    { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT },
    (_request, body, done) => done(null, body),
  );
  scope.post(
    '/api/webhooks/github',
    {
      bodyLimit: WEBHOOK_BODY_LIMIT,
      config: { bodyLimitSource: WEBHOOK_BODY_LIMIT_SOURCE },
      schema: {
        tags: ['github'],
        summary: 'GitHub webhook receiver (push and ping), verified by X-Hub-Signature-256',
        description:
          'A push to a branch queues a ci job for the pushed commit; branch deletions are ' +
          'ignored, and tags unless GITHUB_WEBHOOK_TAGS=true. A redelivered X-GitHub-Delivery ' +
          'changes nothing and answers 200 with duplicate=true.',
        headers: WebhookHeaders,
        response: {
          200: WebhookReply,
          201: WebhookReply,
          400: ErrorSchema,
          401: ErrorSchema,
          413: ErrorSchema,
          415: ErrorSchema,
          503: ErrorSchema,
        },
      },
    },
    (request, reply) => handleWebhook(context, request, reply),
  );
}

interface Delivery {
  id: string;
  event: string;
  /** SHA-256 of the raw body, in hex. */
  bodyHash: string;
  audit: AuditContext;
}

async function handleWebhook(context: AppContext, request: FastifyRequest, reply: FastifyReply) {
  const secret = context.config.github.webhookSecret;
  if (secret === undefined) {
    throw new ApiError(
      'webhook_not_configured',
      'GITHUB_WEBHOOK_SECRET is not set, so webhook signatures cannot be checked; set it to the secret of the GitHub webhook',
      'GITHUB_WEBHOOK_SECRET',
      'configured',
    );
  }
  const body = request.body;
  if (!Buffer.isBuffer(body)) {
    throw new ApiError('invalid_json', 'the webhook body is empty', 'body', 'json');
  }
  const signature = request.headers['x-hub-signature-256'] as string | undefined;
  if (!verifySignature(secret, body, signature)) {
    request.log.info(
      { delivery: request.headers['x-github-delivery'] },
      'webhook signature rejected',
    );
    throw new ApiError(
      'invalid_signature',
      signature === undefined
        ? 'X-Hub-Signature-256 is missing; configure the webhook with a secret'
        : 'X-Hub-Signature-256 does not match the body; check that GITHUB_WEBHOOK_SECRET equals the webhook secret',
      // Lower case, as the fields of the other header errors.
      'x-hub-signature-256',
      signature === undefined ? 'required' : 'hmac-sha256',
    );
  }
  const payload = parsePayload(body, request.headers['content-type']);
  const delivery: Delivery = {
    id: request.headers['x-github-delivery'] as string,
    event: request.headers['x-github-event'] as string,
    bodyHash: createHash('sha256').update(body).digest('hex'),
    audit: { actor: WEBHOOK_ACTOR, requestId: request.id, source: clientAddress(request) },
  };

  const earlier = await context.store.db
    .selectFrom('github_webhook_deliveries')
    .selectAll()
    .where('delivery_id', '=', delivery.id)
    .executeTakeFirst();
  if (earlier !== undefined) {
    return {
      delivery: delivery.id,
      event: earlier.event,
      outcome: earlier.outcome,
      duplicate: true,
      job_id: earlier.job_id,
    };
  }

  if (delivery.event === 'ping') {
    await recordDelivery(context, delivery, 'ping', null, { hook_id: payload.hook_id ?? null });
    return {
      delivery: delivery.id,
      event: 'ping',
      outcome: 'ping',
      duplicate: false,
      zen: typeof payload.zen === 'string' ? payload.zen : '',
    };
  }
  if (delivery.event !== 'push') {
    return ignore(context, delivery, `event ${delivery.event} is not handled; send push events`);
  }
  return handlePush(context, delivery, payload as PushPayload, reply);
}

function parsePayload(body: Buffer, contentType: string | undefined): Record<string, unknown> {
  let text = body.toString('utf8');
  if (contentType?.startsWith('application/x-www-form-urlencoded') === true) {
    text = new URLSearchParams(text).get('payload') ?? '';
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ApiError(
      'invalid_json',
      `the webhook payload is not valid JSON: ${(error as Error).message}`,
      'body',
      'json',
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ApiError(
      'invalid_json',
      'the webhook payload must be a JSON object',
      'body',
      'object',
    );
  }
  return parsed as Record<string, unknown>;
}

async function handlePush(
  context: AppContext,
  delivery: Delivery,
  payload: PushPayload,
  reply: FastifyReply,
) {
  const decision = decidePush(payload, {
    repository: context.config.github.repository,
    tags: context.config.github.webhookTags,
  });
  if (decision.action === 'ignore') return ignore(context, delivery, decision.reason);
  const problem = decision.branch === null ? undefined : branchNameProblem(decision.branch);
  if (problem !== undefined) return ignore(context, delivery, `branch ${problem}`);

  // The hash of the signed body is the job's idempotency key, so a redelivery that arrives
  // before the delivery row below was written (or after a crash in between) finds the same
  // job. So does a replay of the body under a new delivery id, which the signature does not
  // cover. Two real pushes differ in their ref, their commits or `repository.pushed_at`.
  const { job, created } = await triggerJob(
    context,
    {
      type: 'ci',
      commit: decision.commit,
      branch: decision.branch,
      inputs: {},
      params: decision.tag === null ? {} : { tag: decision.tag },
      githubRunId: null,
      githubRunAttempt: null,
      idempotencyKey: `github-push:${delivery.bodyHash}`,
      auditDetails: { webhook_delivery: delivery.id, event: 'push', ref: payload.ref },
    },
    delivery.audit,
  );
  await recordDelivery(context, delivery, 'queued', job.id, { ref: payload.ref, created });
  reply.code(created ? 201 : 200);
  return {
    delivery: delivery.id,
    event: 'push',
    outcome: 'queued',
    duplicate: !created,
    job_id: job.id,
    status: job.status,
  };
}

async function ignore(context: AppContext, delivery: Delivery, reason: string) {
  await recordDelivery(context, delivery, 'ignored', null, { reason });
  return {
    delivery: delivery.id,
    event: delivery.event,
    outcome: 'ignored',
    duplicate: false,
    reason,
  };
}

/** Stores the delivery id; the audit row goes with it unless the job's own row covers it. */
async function recordDelivery(
  context: AppContext,
  delivery: Delivery,
  outcome: string,
  jobId: string | null,
  details: Record<string, unknown>,
): Promise<void> {
  await context.store.write(async (trx) => {
    const inserted = await trx
      .insertInto('github_webhook_deliveries')
      .values({
        delivery_id: delivery.id,
        event: delivery.event,
        outcome,
        job_id: jobId,
        details: JSON.stringify(details),
        received_at: nowIso(),
      })
      .onConflict((oc) => oc.column('delivery_id').doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0 || jobId !== null) return;
    await appendAudit(trx, delivery.audit, {
      action: 'webhook_received',
      details: { delivery: delivery.id, event: delivery.event, outcome, ...details },
    });
  });
}
