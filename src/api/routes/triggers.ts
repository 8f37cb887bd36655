/**
 * Trigger endpoints: `POST /api/trigger/<type>` for each job type of the pipeline file, so the
 * OpenAPI document lists the types this server runs, and the generic `POST /api/trigger/{type}`.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { envName } from '../../dispatch/task-spec.js';
import { branchNameProblem } from '../../jobs/refs.js';
import { JOB_TYPE_PATTERN } from '../../pipeline/schema.js';
import { MAX_PARAM_NAME_LENGTH } from '../../pipeline/schema-common.js';
import { findPipeline, triggerJob, type TriggerRequest } from '../../orchestrator/trigger.js';
import { escapeControlCharacters, firstUnprintable } from '../../util/printable.js';
import { headerCount, type Principal } from '../auth.js';
import { ApiError } from '../errors.js';
import { auditContext } from '../request-context.js';
import { CommitSchema, ErrorSchema, StatusSchema } from '../schemas.js';

const JOB_TYPE_REGEX = new RegExp(JOB_TYPE_PATTERN);

const Scalar = Type.Union([Type.String({ maxLength: 200 }), Type.Number()]);
const MatrixInput = Type.Union([Type.Array(Scalar, { maxItems: 64 }), Scalar]);

export const TriggerBody = Type.Object(
  {
    commit: CommitSchema,
    branch: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 255,
        description:
          'git branch name of valid Unicode, at most 255 bytes, by the rules of git check-ref-format ' +
          '(rule git-ref): ' +
          'no spaces, control characters (C0, DEL and C1), line or paragraph separators ' +
          '(U+2028, U+2029), ~ ^ : ? * [ \\, "..", "@{" or "//"; not "@" or "HEAD"; ' +
          'no leading "-" or "/", no trailing "/" or "."; no part between slashes that starts ' +
          'with "." or ends with ".lock"',
      }),
    ),
    python_versions: Type.Optional(
      Type.Array(Scalar, {
        maxItems: 64,
        description:
          'values for a matrix axis `from: python_versions`; rejected for a job type whose pipeline has no such axis. ' +
          'A number must be whole, because JSON drops trailing zeros (3.10 reads as 3.1), so send versions as strings',
      }),
    ),
    github_run_id: Type.Optional(
      Type.Union([Type.String({ pattern: '^[0-9]{1,20}$' }), Type.Integer({ minimum: 0 })], {
        description:
          'GITHUB_RUN_ID; with github_run_attempt (1 when left out) it makes the trigger idempotent. ' +
          'A GitHub Actions OIDC token may name only its own run (its run_id claim), and gets 403 with rule oidc_run otherwise',
      }),
    ),
    github_run_attempt: Type.Optional(
      // Attempts count from 1, so "0" is rejected as 0 is.
      Type.Union([
        Type.String({ pattern: '^0*[1-9][0-9]{0,5}$' }),
        Type.Integer({ minimum: 1, maximum: 999_999 }),
      ]),
    ),
    params: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: MAX_PARAM_NAME_LENGTH }), Type.Unknown(), {
        maxProperties: 100,
        description:
          'extra values for the pipeline, each reaching the steps as the variable ' +
          'SLIPWAY_PARAM_<NAME>; names have 1 to 100 characters, with no control character ' +
          'other than tab and no line separator (rule printable); keys may feed matrix axes',
      }),
    ),
  },
  {
    // Other fields may feed matrix axes (`from: node_versions`); they are checked per pipeline.
    additionalProperties: {
      ...MatrixInput,
      description:
        "values for the job type's matrix axis `from: <field>`; a field that no axis reads is rejected",
    },
  },
);
export type TriggerBodyType = Static<typeof TriggerBody>;

const TriggerHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      pattern: '^[\\x21-\\x7e]+$',
      description:
        'A repeated request with the same key from the same token returns the first job with 200.',
    }),
  ),
});

const TriggerReply = Type.Object({
  job_id: Type.String(),
  status: StatusSchema,
  reason: Type.Optional(Type.Union([Type.String(), Type.Null()])),
});

/**
 * Job types that the generic trigger route starts only for admin tokens, with the admin
 * endpoint meant for each. A rollback deploys an older commit and a recovery job restarts the
 * deployed services, so a trigger token must not start them here either.
 */
export const ADMIN_JOB_TYPES: ReadonlyMap<string, string> = new Map([
  ['rollback', 'POST /api/rollback/execute'],
  ['recovery', 'POST /api/recovery/execute'],
]);

/**
 * Limit on nesting in `params`. The body parser accepts any depth, but hashing and storing
 * the params walk them recursively, and a body of nested brackets would overflow the stack.
 */
const MAX_PARAMS_DEPTH = 32;
/**
 * Each param reaches the task's steps as one environment variable. Linux starts no process
 * with a single variable over 128 KiB (MAX_ARG_STRLEN), or with its variables and arguments
 * together over ARG_MAX (2 MiB with the usual 8 MiB stack). So a param that could never be
 * passed is refused at the trigger, instead of failing the job later.
 */
const MAX_PARAM_BYTES = 64 * 1024;
const MAX_PARAMS_BYTES = 512 * 1024;
/** Fields of the trigger body that exist only to feed a matrix axis (`from: python_versions`). */
const MATRIX_FIELDS = new Set(['python_versions']);
const KNOWN_FIELDS = new Set([
  'commit',
  'branch',
  'python_versions',
  'github_run_id',
  'github_run_attempt',
  'params',
]);

export function registerTriggerRoutes(app: FastifyInstance, context: AppContext): void {
  const schema = (summary: string, params?: ReturnType<typeof Type.Object>) => ({
    tags: ['jobs'],
    summary,
    security: [{ bearerAuth: [] }],
    body: TriggerBody,
    headers: TriggerHeaders,
    ...(params === undefined ? {} : { params }),
    response: {
      200: { ...TriggerReply, description: 'an earlier request with the same key created the job' },
      201: { ...TriggerReply, description: 'the job was created and committed' },
      400: ErrorSchema,
      401: ErrorSchema,
      403: ErrorSchema,
      // Only the generic route can name a type that the pipeline file does not define.
      ...(params === undefined ? {} : { 404: ErrorSchema }),
      413: ErrorSchema,
      415: ErrorSchema,
      422: ErrorSchema,
      429: ErrorSchema,
    },
  });

  // Types that need an admin token have their own endpoints and are left to the generic route,
  // which checks the role. An undefined type also goes there and gets 404 job_type_not_found.
  const types = Object.keys(context.pipelines.pipelines).filter(
    (type) => !ADMIN_JOB_TYPES.has(type),
  );
  for (const type of types) {
    app.post(
      `/api/trigger/${type}`,
      {
        schema: schema(`Queue a job of type ${type}`),
        config: { roles: ['trigger'] },
        preValidation: (request, _reply, done) => done(checkSingleKey(request)),
      },
      (request, reply) => handleTrigger(context, type, request, reply),
    );
  }

  app.post(
    '/api/trigger/:type',
    {
      schema: schema(
        'Queue a job of any type defined in the pipeline file',
        Type.Object({ type: Type.String({ pattern: JOB_TYPE_PATTERN }) }),
      ),
      config: {
        roles: ['trigger'],
        roleNote:
          `Job types ${[...ADMIN_JOB_TYPES.keys()].join(' and ')} need role admin, ` +
          `like ${[...ADMIN_JOB_TYPES.values()].join(' and ')}.`,
      },
      // Runs before the body is parsed, so a forbidden request gets 403 whatever its body is.
      onRequest: (request, _reply, done) => {
        const { type } = request.params as { type: string };
        done(checkTypeRole(type, request.principal));
      },
      // An unknown job type is the first thing to report, before any complaint about the body.
      preValidation: (request, _reply, done) => {
        const { type } = request.params as { type: string };
        try {
          if (JOB_TYPE_REGEX.test(type)) findPipeline(context, type);
          done(checkSingleKey(request));
        } catch (error) {
          done(error as Error);
        }
      },
    },
    (request, reply) =>
      handleTrigger(context, (request.params as { type: string }).type, request, reply),
  );
}

/**
 * Returns an admin-only job type that triggering `type` may create through trigger_needs, or
 * undefined. Needs created that way trigger their own needs in turn, whatever their setting.
 */
function adminTypeTriggeredBy(context: AppContext, type: string): string | undefined {
  const root = context.pipelines.pipelines[type];
  if (root === undefined || !root.triggerNeeds) return undefined;
  const seen = new Set<string>();
  const pending = [...root.needs];
  while (pending.length > 0) {
    const need = pending.pop()!;
    if (seen.has(need)) continue;
    seen.add(need);
    if (ADMIN_JOB_TYPES.has(need)) return need;
    pending.push(...(context.pipelines.pipelines[need]?.needs ?? []));
  }
  return undefined;
}

/**
 * Returns the error for a request with two Idempotency-Key headers. Node joins them into one
 * value with ", ", which would otherwise be reported as a key with a space.
 */
function checkSingleKey(request: FastifyRequest): ApiError | undefined {
  if (headerCount(request, 'idempotency-key') <= 1) return undefined;
  return new ApiError(
    'validation_failed',
    'the request has more than one Idempotency-Key header; send one',
    'idempotency-key',
    'single',
  );
}

/** Returns the 403 error when the job type needs an admin token and the token is not one. */
export function checkTypeRole(
  type: string,
  principal: Principal | undefined,
): ApiError | undefined {
  const endpoint = ADMIN_JOB_TYPES.get(type);
  if (endpoint === undefined || principal?.role === 'admin') return undefined;
  const token =
    principal === undefined
      ? 'the request has no token'
      : `token "${principal.name}" has role ${principal.role}`;
  return new ApiError(
    'forbidden',
    `job type ${type} needs role admin, and ${token}. Use ${endpoint} with an admin token.`,
    'Authorization',
    'role',
  );
}

async function handleTrigger(
  context: AppContext,
  type: string,
  request: FastifyRequest,
  reply: FastifyReply,
) {
  const body = request.body as TriggerBodyType;
  if (request.principal?.role !== 'admin') {
    const needed = adminTypeTriggeredBy(context, type);
    if (needed !== undefined) {
      throw new ApiError(
        'forbidden',
        `job type ${type} triggers its needs (trigger_needs), which include ${needed}; ` +
          `job type ${needed} needs role admin, so trigger ${type} with an admin token`,
        'Authorization',
        'role',
      );
    }
  }
  const runError = checkOidcRun(body, request.principal);
  if (runError !== undefined) throw runError;
  const triggerRequest = toTriggerRequest(context, type, body, request.headers['idempotency-key']);
  const { job, created } = await triggerJob(context, triggerRequest, auditContext(request));
  reply.code(created ? 201 : 200);
  return { job_id: job.id, status: job.status, reason: job.reason };
}

/**
 * Returns a 403 error when an OIDC token names another workflow run than its own `run_id`
 * claim. A later trigger of that run would find this job in place of its own, and could then
 * neither cancel it nor read its logs.
 */
function checkOidcRun(
  body: TriggerBodyType,
  principal: Principal | undefined,
): ApiError | undefined {
  const claimed = principal?.oidc?.claims.run_id;
  if (claimed === undefined || body.github_run_id === undefined) return undefined;
  const named = normalizeRunId(body.github_run_id);
  const own = normalizeRunId(claimed);
  if (named === own) return undefined;
  return new ApiError(
    'forbidden',
    `github_run_id ${named} is not the workflow run of the OIDC token (run ${own}); an ` +
      `OIDC token triggers only for its own run, so send github_run_id ${own} or leave it out`,
    'github_run_id',
    'oidc_run',
  );
}

/** Returns a run id without leading zeros: "0555" and 555 name the same run. */
function normalizeRunId(runId: string | number): string {
  return String(runId).replace(/^0+(?=\d)/, '');
}

export function toTriggerRequest(
  context: AppContext,
  type: string,
  body: TriggerBodyType,
  idempotencyKey: string | string[] | undefined,
): TriggerRequest {
  checkBranchAndParams(body);
  if (body.github_run_attempt !== undefined && body.github_run_id === undefined) {
    throw new ApiError(
      'validation_failed',
      'github_run_attempt needs github_run_id: an attempt alone names no run; send both or neither',
      'github_run_attempt',
      'dependentRequired',
    );
  }
  // An undefined job type gets its 404 before any complaint about matrix fields.
  const pipeline = findPipeline(context, type);
  const matrixInputs = new Set(pipeline.matrix.map((axis) => axis.from));
  const inputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (KNOWN_FIELDS.has(key) && !MATRIX_FIELDS.has(key)) continue;
    if (!matrixInputs.has(key)) throw unusedMatrixField(type, key);
    inputs[key] = value;
  }
  return {
    type,
    commit: body.commit.toLowerCase(),
    branch: body.branch ?? null,
    inputs,
    params: body.params ?? {},
    // "0555" and 555 name the same run, so they must find the same job.
    githubRunId: body.github_run_id === undefined ? null : normalizeRunId(body.github_run_id),
    githubRunAttempt:
      body.github_run_attempt === undefined ? null : Number(body.github_run_attempt),
    idempotencyKey: typeof idempotencyKey === 'string' ? idempotencyKey : null,
  };
}

/**
 * Returns the error for a trigger field that no matrix axis of the job type's pipeline reads.
 * Such a field would be stored and ignored, so the caller could believe that its values ran.
 */
function unusedMatrixField(type: string, field: string): ApiError {
  if (MATRIX_FIELDS.has(field)) {
    return new ApiError(
      'validation_failed',
      `${field} is not used by job type ${type}: its pipeline has no matrix axis with ` +
        `from: ${field}; leave the field out or add such an axis`,
      field,
      'matrix_axis',
    );
  }
  return new ApiError(
    'validation_failed',
    `unknown field "${field}": the ${type} pipeline has no matrix axis fed from it`,
    field,
    'unknown_field',
  );
}

/**
 * Checks the branch and params of a request that creates jobs: the trigger routes and the
 * recovery procedures that run a pipeline.
 */
export function checkBranchAndParams(body: {
  branch?: string | undefined;
  params?: Record<string, unknown> | undefined;
}): void {
  if (body.branch !== undefined) {
    const problem = branchNameProblem(body.branch);
    if (problem !== undefined) {
      throw new ApiError('validation_failed', `branch ${problem}`, 'branch', 'git-ref');
    }
  }
  if (body.params === undefined) return;
  if (nestingDepth(body.params) > MAX_PARAMS_DEPTH) {
    throw new ApiError(
      'validation_failed',
      `params must not nest objects or arrays more than ${MAX_PARAMS_DEPTH} levels deep`,
      'params',
      'maxDepth',
    );
  }
  checkParamNames(body.params);
  checkParamNumbers(body.params);
  checkParamSizes(body.params);
  checkParamVariables(body.params);
}

/**
 * Rejects a param name that is empty, longer than MAX_PARAM_NAME_LENGTH, or not printable. The
 * schema cannot check this, because TypeBox writes a record's key as the pattern `^(.*)$` and
 * drops its limits. An empty name would reach the steps as `SLIPWAY_PARAM_`, which names
 * nothing. A name is quoted in error messages that clients print, so it follows the rule of a
 * reason (rule printable): no control character other than tab and no line separator.
 */
function checkParamNames(params: Record<string, unknown>): void {
  for (const key of Object.keys(params)) {
    if (firstUnprintable(key) !== undefined) {
      throw new ApiError(
        'validation_failed',
        `params has a param named "${escapeControlCharacters(key)}" with a control character ` +
          'or line separator; give each param a printable name, which reaches the steps as ' +
          'SLIPWAY_PARAM_<NAME>',
        'params',
        'printable',
      );
    }
    if (key.length >= 1 && key.length <= MAX_PARAM_NAME_LENGTH) continue;
    const problem =
      key === ''
        ? 'an empty name'
        : `a name of ${key.length} characters ("${key.slice(0, 20)}...")`;
    throw new ApiError(
      'validation_failed',
      `params has a param with ${problem}; give each param a name of 1 to ` +
        `${MAX_PARAM_NAME_LENGTH} characters, which reaches the steps as SLIPWAY_PARAM_<NAME>`,
      'params',
      'propertyNames',
    );
  }
}

/**
 * Rejects two params that would become the same environment variable (`a-b` and `a_b` are
 * both SLIPWAY_PARAM_A_B), because the steps would see only one of them.
 */
function checkParamVariables(params: Record<string, unknown>): void {
  const keys = new Map<string, string>();
  for (const key of Object.keys(params)) {
    const variable = `SLIPWAY_PARAM_${envName(key)}`;
    const other = keys.get(variable);
    if (other !== undefined) {
      throw new ApiError(
        'validation_failed',
        `params.${key} and params.${other} both become the variable ${variable}; rename one`,
        `params.${key}`,
        'uniqueVariable',
      );
    }
    keys.set(variable, key);
  }
}

/**
 * Rejects numbers in params that JSON text can hold but a JavaScript number cannot: integers
 * beyond 2^53 lose digits, and values such as 1e400 become Infinity, which is stored as null.
 */
function checkParamNumbers(params: Record<string, unknown>): void {
  const pending: Array<[unknown, string]> = Object.entries(params).map(([key, value]) => [
    value,
    `params.${key}`,
  ]);
  while (pending.length > 0) {
    const [value, field] = pending.pop()!;
    if (typeof value === 'number') {
      if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value))) {
        throw new ApiError(
          'validation_failed',
          `${field} is a number that cannot be kept exactly; send integers between ` +
            `${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}, or send the value as a string`,
          field,
          'maximum',
        );
      }
    } else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) pending.push([child, `${field}.${key}`]);
    }
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Refuses params whose environment variables a process could not be started with. */
function checkParamSizes(params: Record<string, unknown>): void {
  let total = 0;
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined) continue;
    if (typeof value === 'string' && (value.includes('\0') || LONE_SURROGATE.test(value))) {
      // A process cannot get a variable with a NUL byte, and a lone surrogate has no UTF-8 form.
      throw new ApiError(
        'validation_failed',
        `params.${key} contains a NUL character or a lone UTF-16 surrogate, which an environment variable cannot hold`,
        `params.${key}`,
        'environment',
      );
    }
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    const bytes = Buffer.byteLength(text);
    total += bytes;
    if (bytes > MAX_PARAM_BYTES) {
      throw new ApiError(
        'validation_failed',
        `params.${key} is ${bytes} bytes; a param reaches the steps as an environment variable and may hold at most ${MAX_PARAM_BYTES}`,
        `params.${key}`,
        'maxBytes',
      );
    }
  }
  if (total > MAX_PARAMS_BYTES) {
    throw new ApiError(
      'validation_failed',
      `params hold ${total} bytes together; the steps' environment may hold at most ${MAX_PARAMS_BYTES} of them`,
      'params',
      'maxBytes',
    );
  }
}

/** Depth of nested objects and arrays in a parsed JSON value, found without recursion. */
export function nestingDepth(value: unknown): number {
  let deepest = 0;
  const pending: Array<[unknown, number]> = [[value, 0]];
  while (pending.length > 0) {
    const [item, depth] = pending.pop()!;
    if (item === null || typeof item !== 'object') continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_PARAMS_DEPTH) return deepest;
    for (const child of Object.values(item)) pending.push([child, depth + 1]);
  }
  return deepest;
}
