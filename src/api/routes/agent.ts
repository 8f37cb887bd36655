/**
 * The agent API that workers use over HTTP (role `agent`; admin also passes): register,
 * long-poll claim, heartbeat, log upload, finish and hand-back. Task calls name the task,
 * the worker and the lease attempt, and fail with 409 `lease_lost` when the worker no
 * longer holds that lease.
 */
import { Type } from '@sinclair/typebox';
import { sql, type Kysely } from 'kysely';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { WORKER_ID_PATTERN } from '../../config/env.js';
import { executionServices, closeExecutionServices } from '../../dispatch/services.js';
import { MAX_REPORT_REASON_LENGTH, printableReportReason } from '../../dispatch/task-spec.js';
import {
  finishTask,
  FINISH_STATUSES,
  heartbeat,
  releaseTask,
  requireLease,
  type FinishReport,
  type FinishResult,
  type FinishStatus,
  type LeaseHolder,
} from '../../dispatch/lease.js';
import {
  ClaimRejected,
  claimRejection,
  redeliverTasks,
  touchWorker,
} from '../../dispatch/claim.js';
import { LogOffsetError } from '../../logs/task-log-store.js';
import { instanceId } from '../../jobs/labels.js';
import { ChangeSet } from '../../orchestrator/changes.js';
import { appendAudit } from '../../store/audit.js';
import type { Database } from '../../store/schema.js';
import { nowIso } from '../../util/time.js';
import { ApiError } from '../errors.js';
import { EXIT_CODE_RULE, HOSTNAME_PATTERN } from '../schemas.js';
import { auditContext } from '../request-context.js';
import { checkWorkerOwner } from '../worker-owner.js';
import { ErrorSchema } from '../schemas.js';

/** Smallest body limit of log uploads; the worker's largest upload stays under it. */
const LOG_UPLOAD_BODY_LIMIT = 1024 * 1024;

/** Maximum seconds a claim waits for tasks, below the 30 s idle timeout common in proxies. */
export const MAX_CLAIM_WAIT_SECONDS = 25;
/** Upper bound on the heartbeat interval, so a cancel reaches a worker within about a second. */
const MAX_HEARTBEAT_INTERVAL_MS = 1_000;

/** Description of the reason of a finish or release report; storedReportReason applies it. */
const REPORT_REASON_DESCRIPTION =
  'control characters other than tab are stored escaped (`\\n`, `\\r`, `\\u001b`), ' +
  'and the result is cut to the maximum length; workers escape them before sending';

const TASK_ID_PATTERN = '^[a-z][a-z0-9-]{0,62}-[0-9a-f]{8}\\.[0-9]+\\.[0-9]+$';
const Executor = Type.Union([Type.Literal('docker'), Type.Literal('local')]);

const WorkerParams = Type.Object({ worker_id: Type.String({ pattern: WORKER_ID_PATTERN }) });
/** Upper bound on the processes of one leftovers report, because a search finds a few at most. */
const MAX_LEFTOVERS = 1_000;
const LeftoverStep = Type.Object(
  {
    pid: Type.Integer({ minimum: 1 }),
    task_id: Type.Union([Type.String({ pattern: TASK_ID_PATTERN }), Type.Null()]),
  },
  { additionalProperties: false },
);
const TaskParams = Type.Object({
  task_id: Type.String({ pattern: TASK_ID_PATTERN, description: 'e.g. ci-a1b2c3d4.1.0' }),
});
const LeaseFields = {
  worker_id: Type.String({ pattern: WORKER_ID_PATTERN }),
  attempt: Type.Integer({ minimum: 1, description: 'the lease attempt the claim returned' }),
};

const RegisterBody = Type.Object(
  {
    worker_id: Type.Optional(
      Type.String({
        pattern: WORKER_ID_PATTERN,
        description: 'unique id of this worker process; defaults to name',
      }),
    ),
    name: Type.String({ pattern: WORKER_ID_PATTERN, description: 'display name' }),
    session: Type.Optional(
      Type.String({
        minLength: 8,
        maxLength: 64,
        description:
          'random value, fixed for the life of the worker process; a registration of an ' +
          'online worker id from another session is rejected with worker_id_in_use',
      }),
    ),
    // Printable text: the host name is shown in health details, logs and the worker_id_in_use
    // message that a worker prints when it exits. So C1 controls (U+009B is CSI) and line
    // separators are rejected too.
    hostname: Type.String({ minLength: 1, maxLength: 255, pattern: HOSTNAME_PATTERN }),
    executors: Type.Array(Executor, {
      minItems: 1,
      uniqueItems: true,
      description: 'executors this worker runs; the first is used for tasks that name none',
    }),
    capacity: Type.Integer({ minimum: 1, maximum: 256 }),
    // Stored and written to the audit log, so printable like the host name.
    labels: Type.Optional(
      Type.Array(Type.String({ maxLength: 100, pattern: HOSTNAME_PATTERN }), { maxItems: 50 }),
    ),
    version: Type.Optional(Type.String({ maxLength: 100, pattern: HOSTNAME_PATTERN })),
  },
  { additionalProperties: false },
);

const ClaimBody = Type.Object(
  {
    max: Type.Integer({
      minimum: 1,
      maximum: 256,
      description: 'maximum number of tasks to return',
    }),
    session: Type.Optional(
      Type.String({
        minLength: 8,
        maxLength: 64,
        description:
          'the session the worker registered with; a claim from a process whose worker id ' +
          'another process has registered since is rejected with worker_session_replaced',
      }),
    ),
    wait_seconds: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: MAX_CLAIM_WAIT_SECONDS,
        description: 'how long to wait when no task is queued (default 25)',
      }),
    ),
    holding: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
        maxItems: 1024,
        description:
          'ids of the tasks this process runs or still reports on. With a session, running ' +
          'tasks claimed by this session and not listed are returned again first, with the ' +
          'same attempt: the response of the claim that took them was lost. Those whose ' +
          'executor `executors` leaves out are queued again instead, using up no attempt',
      }),
    ),
    executors: Type.Optional(
      Type.Array(Executor, {
        maxItems: 2,
        uniqueItems: true,
        description:
          'executors this claim takes tasks for, among those the worker registered (default: ' +
          'all of them). A worker leaves out one that cannot run tasks now, such as docker ' +
          'while its engine does not respond. Tasks whose pipeline names no executor go to ' +
          'the worker only when its first registered executor is listed. The API records the ' +
          'executors left out until a claim lists them again, and the reason of a queued job ' +
          'that needs one names the workers',
      }),
    ),
  },
  { additionalProperties: false },
);

const Resources = Type.Object({
  memory: Type.Optional(Type.Integer({ description: 'bytes' })),
  cpus: Type.Optional(Type.Number()),
  pids: Type.Optional(Type.Integer()),
});

const TaskSpecSchema = Type.Object({
  task_id: Type.String(),
  attempt: Type.Integer(),
  lease_expires_at: Type.String({ format: 'date-time' }),
  job: Type.Object({
    id: Type.String(),
    type: Type.String(),
    attempt: Type.Integer(),
    commit: Type.Union([Type.String(), Type.Null()]),
    branch: Type.Union([Type.String(), Type.Null()]),
  }),
  name: Type.String(),
  matrix: Type.Record(Type.String(), Type.String()),
  executor: Type.Union([Executor, Type.Null()]),
  image: Type.Union([Type.String(), Type.Null()]),
  repository: Type.Union([Type.String(), Type.Null()]),
  steps: Type.Array(Type.Object({ name: Type.String(), run: Type.String() })),
  env: Type.Record(Type.String(), Type.String()),
  secrets: Type.Array(
    Type.Object({
      name: Type.String(),
      fromEnv: Type.Optional(Type.String()),
      fromFile: Type.Optional(Type.String()),
    }),
    { description: 'names and sources only; the worker reads the values' },
  ),
  timeout_ms: Type.Integer(),
  network: Type.Union([Type.String(), Type.Null()]),
  user: Type.Union([Type.String(), Type.Null()], {
    description:
      "user of the docker executor's container, or null for the image's USER. The value `worker` means the worker process's uid and gid",
  }),
  resources: Resources,
  side_effects: Type.Boolean(),
  retry_on_error: Type.Optional(
    Type.Boolean({
      description:
        "whether an `error` outcome of this attempt is queued again under the pipeline's " +
        '`retries`; a worker waits for the removal of a container left by an engine failure ' +
        'only then',
    }),
  ),
});

const errors = {
  400: ErrorSchema,
  401: ErrorSchema,
  403: ErrorSchema,
  404: ErrorSchema,
  409: ErrorSchema,
};

export function registerAgentRoutes(app: FastifyInstance, context: AppContext): void {
  const services = executionServices(context);
  const leaseMs = context.config.worker.leaseSeconds * 1000;
  // An idle online worker is seen at least once per claim wait, so a shorter window would
  // let a second process take the id of a worker that is merely waiting.
  const liveWindowMs = Math.max(3 * leaseMs, 2 * MAX_CLAIM_WAIT_SECONDS * 1000);
  // Waiting claims end before the server closes: a close waits for every open request, and a
  // claim would otherwise hold a restart for up to its whole wait.
  app.addHook('preClose', async () => services.dispatcher.close());
  app.addHook('onClose', async () => closeExecutionServices(context));

  const route = (summary: string, description?: string) => ({
    tags: ['agent'],
    summary,
    ...(description === undefined ? {} : { description }),
    security: [{ bearerAuth: [] }],
  });

  app.post(
    '/api/agent/workers',
    {
      schema: {
        ...route('Register a worker, or update its registration'),
        body: RegisterBody,
        response: {
          200: Type.Object({
            worker_id: Type.String(),
            lease_seconds: Type.Integer(),
            heartbeat_interval_ms: Type.Integer(),
            max_claim_wait_seconds: Type.Integer(),
            instance_id: Type.String({
              description: 'installation id for the slipway.instance container label',
            }),
          }),
          ...errors,
        },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const body = request.body as {
        worker_id?: string;
        name: string;
        session?: string;
        hostname: string;
        executors: string[];
        capacity: number;
        labels?: string[];
        version?: string;
      };
      const audit = auditContext(request);
      const now = nowIso();
      const workerId = body.worker_id ?? body.name;
      const liveAfter = new Date(Date.now() - liveWindowMs).toISOString();
      await context.store.write(async (trx) => {
        const existing = await trx
          .selectFrom('workers')
          .select(['status', 'session', 'hostname', 'last_heartbeat_at'])
          .where('id', '=', workerId)
          .executeTakeFirst();
        if (
          existing !== undefined &&
          existing.status === 'online' &&
          existing.last_heartbeat_at >= liveAfter &&
          existing.session !== null &&
          existing.session !== (body.session ?? null)
        ) {
          throw workerIdInUse(workerId, existing.hostname, existing.last_heartbeat_at);
        }
        const row = {
          name: body.name,
          hostname: body.hostname,
          executors: JSON.stringify(body.executors),
          labels: JSON.stringify(body.labels ?? []),
          capacity: body.capacity,
          version: body.version ?? null,
          status: 'online' as const,
          last_heartbeat_at: now,
          session: body.session ?? null,
          token_id: request.principal?.tokenId ?? null,
          unavailable_executors: null,
        };
        await trx
          .insertInto('workers')
          .values({ id: workerId, registered_at: now, ...row })
          .onConflict((conflict) => conflict.column('id').doUpdateSet(row))
          .execute();
        await appendAudit(trx, audit, {
          action: 'worker_registered',
          details: { ...body, worker_id: workerId },
        });
      });
      // A claim still waiting from a process that this registration replaced is rejected now.
      services.dispatcher.wake();
      return {
        worker_id: workerId,
        lease_seconds: context.config.worker.leaseSeconds,
        heartbeat_interval_ms: Math.min(MAX_HEARTBEAT_INTERVAL_MS, Math.floor(leaseMs / 3)),
        max_claim_wait_seconds: MAX_CLAIM_WAIT_SECONDS,
        instance_id: instanceId(context.store),
      };
    },
  );

  app.post(
    '/api/agent/workers/:worker_id/claim',
    {
      schema: {
        ...route(
          'Claim queued tasks (long-poll)',
          'Returns at once when tasks are queued; otherwise waits up to wait_seconds and ' +
            'returns as soon as a task is queued, or an empty list. Each task is returned ' +
            'running, with its lease attempt and lease expiry.',
        ),
        params: WorkerParams,
        body: ClaimBody,
        response: { 200: Type.Object({ tasks: Type.Array(TaskSpecSchema) }), ...errors },
      },
      config: { roles: ['agent'] },
    },
    async (request, reply) => {
      const { worker_id: workerId } = request.params as { worker_id: string };
      const body = request.body as {
        max: number;
        wait_seconds?: number;
        session?: string;
        holding?: string[];
        executors?: string[];
      };
      await checkWorkerOwner(context.store.db, workerId, request.principal);
      const worker = await context.store.db
        .selectFrom('workers')
        .selectAll()
        .where('id', '=', workerId)
        .executeTakeFirst();
      if (worker === undefined) throw workerNotFound(workerId);
      // An empty list here made a worker that another process had marked offline claim again
      // at once, thousands of times a second, so the worker must register again instead.
      // The dispatcher checks again in each claim's transaction, and while the claim waits.
      const rejected = claimRejection(workerId, worker, body.session);
      if (rejected !== undefined) {
        // A drained worker keeps claiming, and each claim shows that it is alive.
        if (!rejected.sessionReplaced) {
          await context.store.write((trx) => touchWorker(trx, workerId));
        }
        throw rejectionError(rejected);
      }
      const executors = JSON.parse(worker.executors) as string[];
      const unregistered = body.executors?.find((name) => !executors.includes(name));
      if (unregistered !== undefined) {
        throw new ApiError(
          'validation_failed',
          `executor ${unregistered} is not one that worker ${workerId} registered ` +
            `(${executors.join(', ')}); register it again to add executors`,
          'executors',
          'registered',
        );
      }
      await recordUnavailableExecutors(
        context.store,
        worker,
        executors,
        body.executors,
        auditContext(request),
      );
      const claimRequest = {
        workerId,
        executors: body.executors ?? executors,
        defaultExecutor: executors[0] ?? 'local',
        max: body.max,
        leaseMs,
        session: body.session,
      };
      if (body.holding !== undefined) {
        const holding = body.holding;
        const changes = new ChangeSet();
        const lost = await context.store.write((trx) =>
          redeliverTasks(trx, claimRequest, holding, auditContext(request), changes),
        );
        // Tasks queued again wake the claims of other workers.
        changes.emit(context.events);
        if (lost.length > 0) {
          request.log.warn(
            { worker: workerId, tasks: lost.map((task) => task.task_id) },
            'returning tasks again whose claim response the worker did not receive',
          );
          return { tasks: lost };
        }
      }
      const waitMs = (body.wait_seconds ?? MAX_CLAIM_WAIT_SECONDS) * 1000;
      const gone = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      const tasks = await services.dispatcher
        .claim(claimRequest, auditContext(request), waitMs, gone.signal)
        .catch((error: unknown) => {
          throw error instanceof ClaimRejected ? rejectionError(error) : error;
        });
      for (const task of tasks) {
        const file = services.logs.pathFor(task.job.id, task.task_id, task.attempt);
        await services.logs.create(file);
      }
      return { tasks };
    },
  );

  app.post(
    '/api/agent/workers/:worker_id/status',
    {
      schema: {
        ...route(
          'Mark a worker draining or offline',
          'A draining or offline worker gets no more tasks; its waiting claims end at once with ' +
            '409 worker_not_online. A draining worker runs its tasks to the end and claims ' +
            'again once set online; an offline one registers again (setting it online or ' +
            'draining gets 409 invalid_transition). Repeating the current status changes nothing.',
        ),
        params: WorkerParams,
        body: Type.Object(
          {
            status: Type.Union([
              Type.Literal('online'),
              Type.Literal('draining'),
              Type.Literal('offline'),
            ]),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ worker_id: Type.String(), status: Type.String() }),
          ...errors,
        },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const { worker_id: workerId } = request.params as { worker_id: string };
      const { status } = request.body as { status: 'online' | 'draining' | 'offline' };
      const audit = auditContext(request);
      const found = await context.store.write(async (trx) => {
        await checkWorkerOwner(trx, workerId, request.principal);
        const worker = await trx
          .selectFrom('workers')
          .select('status')
          .where('id', '=', workerId)
          .executeTakeFirst();
        if (worker === undefined) return false;
        if (worker.status === 'offline' && status !== 'offline') {
          // A worker is offline when it stopped or went silent. It comes back by registering
          // again, which a worker does when it starts or on its next claim.
          throw new ApiError(
            'invalid_transition',
            `worker ${workerId} is offline, so it cannot be set ${status}; an offline worker ` +
              'registers again, as a worker does when it starts or on its next claim',
            'status',
            'transition',
          );
        }
        const changed = worker.status !== status;
        await trx
          .updateTable('workers')
          .set(changed ? { status, last_heartbeat_at: nowIso() } : { last_heartbeat_at: nowIso() })
          .where('id', '=', workerId)
          .execute();
        // A repeated request changes nothing, so it adds no audit row.
        if (changed) {
          await appendAudit(trx, audit, {
            action: 'worker_status_changed',
            details: { worker_id: workerId, status, previous_status: worker.status },
          });
        }
        return true;
      });
      if (!found) throw workerNotFound(workerId);
      if (status !== 'online') services.dispatcher.releaseWorker(workerId, status);
      return { worker_id: workerId, status };
    },
  );

  app.post(
    '/api/agent/workers/:worker_id/leftovers',
    {
      schema: {
        ...route(
          'Report the step processes of ended workers that the worker killed',
          'A worker that starts on a host where an earlier worker was killed finds the steps ' +
            'that one left running and kills them. This records what it found in the audit ' +
            'log (action leftover_steps_stopped).',
        ),
        params: WorkerParams,
        body: Type.Object(
          {
            killed: Type.Array(LeftoverStep, { maxItems: MAX_LEFTOVERS }),
            failed: Type.Array(
              Type.Object(
                { ...LeftoverStep.properties, code: Type.String({ minLength: 1, maxLength: 64 }) },
                { additionalProperties: false },
              ),
              { maxItems: MAX_LEFTOVERS, description: 'processes it could not kill' },
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ worker_id: Type.String(), recorded: Type.Integer() }),
          ...errors,
        },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const { worker_id: workerId } = request.params as { worker_id: string };
      const body = request.body as {
        killed: Array<{ pid: number; task_id: string | null }>;
        failed: Array<{ pid: number; task_id: string | null; code: string }>;
      };
      const audit = auditContext(request);
      await context.store.write(async (trx) => {
        await checkWorkerOwner(trx, workerId, request.principal);
        const worker = await trx
          .selectFrom('workers')
          .select('id')
          .where('id', '=', workerId)
          .executeTakeFirst();
        if (worker === undefined) throw workerNotFound(workerId);
        await appendAudit(trx, audit, {
          action: 'leftover_steps_stopped',
          details: { worker_id: workerId, killed: body.killed, failed: body.failed },
        });
      });
      return { worker_id: workerId, recorded: body.killed.length + body.failed.length };
    },
  );

  app.post(
    '/api/agent/tasks/:task_id/heartbeat',
    {
      schema: {
        ...route('Extend the lease on a task; returns whether a cancel was requested'),
        params: TaskParams,
        body: Type.Object(LeaseFields, { additionalProperties: false }),
        response: {
          200: Type.Object({
            lease_expires_at: Type.String({ format: 'date-time' }),
            cancel_requested: Type.Boolean(),
            ended_status: Type.Optional(
              Type.String({
                description:
                  'the final status that a status update gave the task while the worker ran ' +
                  'it; cancel_requested is true, and the worker stops the step and reports ' +
                  'that it stopped',
              }),
            ),
          }),
          ...errors,
        },
      },
      // A running task sends these every few seconds. Their request lines would drown the log
      // at level info, so this route writes only warnings and errors.
      logLevel: 'warn',
      config: { roles: ['agent'] },
    },
    async (request) => {
      const holder = await leaseHolder(context, request);
      const result = await context.store.write((trx) => heartbeat(trx, holder, leaseMs));
      return {
        lease_expires_at: result.leaseExpiresAt,
        cancel_requested: result.cancelRequested,
        ...(result.endedStatus === undefined ? {} : { ended_status: result.endedStatus }),
      };
    },
  );

  app.post(
    '/api/agent/tasks/:task_id/logs',
    {
      // A worker's upload of 64 Ki characters reaches about 400 KB when JSON escapes each one
      // as \uXXXX, so a lower API_BODY_LIMIT must not reject it and lose the task's output.
      bodyLimit: Math.max(context.config.api.bodyLimitBytes, LOG_UPLOAD_BODY_LIMIT),
      schema: {
        ...route(
          'Append output to the task attempt log',
          'offset is the byte position (UTF-8) of the first byte of data within the ' +
            "attempt's output. Bytes already received are skipped, so an upload may be retried.",
        ),
        params: TaskParams,
        body: Type.Object(
          {
            ...LeaseFields,
            offset: Type.Integer({ minimum: 0 }),
            data: Type.String({ description: 'output, secrets already replaced by ***' }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            received: Type.Integer({
              description: "bytes of the attempt's output received so far, the next offset",
            }),
            accepted: Type.Integer({
              description:
                'bytes of this upload that were new; those past SLIPWAY_LOG_MAX_BYTES count too, though they are dropped',
            }),
            truncated: Type.Boolean({ description: 'the log reached SLIPWAY_LOG_MAX_BYTES' }),
          }),
          ...errors,
        },
      },
      // A running task sends these every few seconds. Their request lines would drown the log
      // at level info, so this route writes only warnings and errors.
      logLevel: 'warn',
      config: {
        roles: ['agent'],
        bodyLimitSource:
          context.config.api.bodyLimitBytes >= LOG_UPLOAD_BODY_LIMIT
            ? 'API_BODY_LIMIT'
            : 'the minimum body limit of log uploads, whatever API_BODY_LIMIT is',
      },
    },
    async (request) => {
      const holder = await leaseHolder(context, request);
      const body = request.body as { offset: number; data: string };
      const task = await requireLease(context.store.db, holder, { stopping: true });
      const file = task.log_path ?? services.logs.pathFor(task.job_id, task.id, task.attempt);
      try {
        return await services.logs.append(file, body.offset, Buffer.from(body.data, 'utf8'));
      } catch (error) {
        if (error instanceof LogOffsetError) {
          throw new ApiError('validation_failed', error.message, 'offset', error.rule, {
            received: error.received,
          });
        }
        throw error;
      }
    },
  );

  app.post(
    '/api/agent/tasks/:task_id/finish',
    {
      schema: {
        ...route('Report the outcome of a task attempt'),
        params: TaskParams,
        body: Type.Object(
          {
            ...LeaseFields,
            status: Type.Union(FINISH_STATUSES.map((status) => Type.Literal(status))),
            exit_code: Type.Optional(
              Type.Union([Type.Integer(), Type.Null()], { description: EXIT_CODE_RULE }),
            ),
            reason: Type.Optional(
              Type.Union([Type.String({ maxLength: MAX_REPORT_REASON_LENGTH }), Type.Null()], {
                description: REPORT_REASON_DESCRIPTION,
              }),
            ),
            duration_ms: Type.Number({ minimum: 0 }),
            step_stopped: Type.Optional(
              Type.Boolean({
                description:
                  'False when the worker could not make sure that the steps stopped, such as ' +
                  'when the Docker engine stopped answering. The task ends with the reported ' +
                  'status, is not retried, and keeps its lease, so its concurrency group waits, ' +
                  'until a report with true (the default) or the end of the lease.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            task_id: Type.String(),
            status: Type.String(),
            retried: Type.Boolean(),
          }),
          ...errors,
        },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const holder = await leaseHolder(context, request);
      const body = request.body as {
        status: FinishStatus;
        exit_code?: number | null;
        reason?: string | null;
        duration_ms: number;
        step_stopped?: boolean;
      };
      const changes = new ChangeSet();
      const report = {
        status: body.status,
        exitCode: body.exit_code ?? null,
        // An empty reason would make the job's reason "<task>: " with nothing after it.
        reason:
          body.reason === '' || body.reason === undefined || body.reason === null
            ? null
            : storedReportReason(request, holder, body.reason),
        durationMs: body.duration_ms,
        stepStopped: body.step_stopped ?? true,
      };
      let result: FinishResult;
      try {
        result = await context.store.write((trx) =>
          finishTask(trx, holder, report, changes, auditContext(request)),
        );
      } catch (error) {
        if (error instanceof ApiError && error.code === 'lease_lost') {
          await recordLateReport(request, holder, report, error);
        }
        throw error;
      }
      // The line goes in before the change events wake the log followers of this process.
      if (result.task.log_path !== null) {
        const seconds = (report.durationMs / 1000).toFixed(1);
        const reason = report.reason === null ? '' : `: ${report.reason}`;
        await noteAfterCut(
          request,
          result.task.id,
          result.task.log_path,
          `[slipway] task ended ${report.status} after ${seconds} s${reason}`,
        );
        services.logs.release(result.task.log_path);
      }
      changes.emit(context.events);
      return { task_id: result.task.id, status: result.task.status, retried: result.retried };
    },
  );

  /**
   * Writes `line` into an attempt's log that was cut at SLIPWAY_LOG_MAX_BYTES, where the
   * worker's own closing line could not go: the outcome of a finish, or a hand-back.
   */
  async function noteAfterCut(
    request: FastifyRequest,
    taskId: string,
    file: string,
    line: string,
  ): Promise<void> {
    try {
      await services.logs.noteIfCut(file, line);
    } catch (error) {
      // The outcome is stored with the task, so a failed write costs only the log line.
      request.log.error(
        { err: error, taskId, file },
        'failed to write the outcome line into the cut task log',
      );
    }
  }

  /**
   * Records a finish report that came after the worker lost its lease. The task's outcome
   * stays as the lease recovery decided, but a person checking the target of a deploy that
   * ended `error` learns from this row that the worker saw it through. A report on an attempt
   * that the worker never held adds no row, so an agent token cannot fill the audit log of
   * tasks its workers never ran.
   */
  async function recordLateReport(
    request: FastifyRequest,
    holder: LeaseHolder,
    report: FinishReport,
    error: ApiError,
  ): Promise<void> {
    const details = {
      worker_id: holder.workerId,
      attempt: holder.attempt,
      reported_status: report.status,
      exit_code: report.exitCode,
      reason: report.reason,
      duration_ms: report.durationMs,
      task_status: error.extra?.status ?? null,
      task_attempt: error.extra?.attempt ?? null,
    };
    try {
      const jobId = await heldAttemptJob(context.store.db, holder);
      if (jobId === undefined) {
        request.log.warn(
          { taskId: holder.taskId, ...details },
          `worker ${holder.workerId} reported attempt ${holder.attempt} of task ` +
            `${holder.taskId}, which it never held; the report changes nothing and is not ` +
            'recorded in the audit log',
        );
        return;
      }
      request.log.warn(
        { taskId: holder.taskId, ...details },
        `worker ${holder.workerId} reported attempt ${holder.attempt} of task ${holder.taskId} ` +
          `as ${report.status} after it lost the lease; the report changes nothing`,
      );
      await context.store.write(async (trx) => {
        await appendAudit(trx, auditContext(request), {
          action: 'task_report_rejected',
          jobId,
          taskId: holder.taskId,
          details,
        });
      });
    } catch (auditError) {
      request.log.error(
        { err: auditError, taskId: holder.taskId },
        'could not record the late finish report in the audit log',
      );
    }
  }

  app.post(
    '/api/agent/tasks/:task_id/release',
    {
      schema: {
        ...route(
          'Hand a task back from a stopping worker',
          'The task is queued again, or ends as error when its pipeline has side effects.',
        ),
        params: TaskParams,
        body: Type.Object(
          {
            ...LeaseFields,
            reason: Type.String({
              minLength: 1,
              maxLength: MAX_REPORT_REASON_LENGTH,
              description: REPORT_REASON_DESCRIPTION,
            }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ task_id: Type.String(), status: Type.String() }),
          ...errors,
        },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const holder = await leaseHolder(context, request);
      const reason = storedReportReason(
        request,
        holder,
        (request.body as { reason: string }).reason,
      );
      const changes = new ChangeSet();
      const task = await context.store.write((trx) =>
        releaseTask(trx, holder, reason, changes, auditContext(request)),
      );
      // The worker's own line about the stop went past a cut, so the API writes what became
      // of the task, before the change events wake the log followers of this process.
      const file = services.logs.pathFor(task.job_id, task.id, holder.attempt);
      const outcome =
        task.status === 'queued' ? 'the task is queued again' : `the task ended ${task.status}`;
      await noteAfterCut(request, task.id, file, `[slipway] ${reason}; ${outcome}`);
      changes.emit(context.events);
      return { task_id: task.id, status: task.status };
    },
  );
}

/**
 * Returns a finish or release reason with its control characters escaped. Workers escape them
 * before they send a reason, so this changes only the reports of older workers, and it logs a
 * warning when it does. Such a report is not rejected, because a worker drops a report that
 * gets 400. The task would then keep its lease until it expired and lose the outcome.
 */
function storedReportReason(request: FastifyRequest, holder: LeaseHolder, reason: string): string {
  const stored = printableReportReason(reason);
  if (stored !== reason) {
    request.log.warn(
      { taskId: holder.taskId, workerId: holder.workerId, attempt: holder.attempt },
      `worker ${holder.workerId} sent a reason for task ${holder.taskId} with control ` +
        'characters; they are stored escaped. Workers of this version escape them before ' +
        'sending, so the worker probably runs an older version',
    );
  }
  return stored;
}

/** Returns the task, worker and attempt a report names, after checking the token may act for that worker. */
async function leaseHolder(context: AppContext, request: FastifyRequest): Promise<LeaseHolder> {
  const { task_id: taskId } = request.params as { task_id: string };
  const { worker_id: workerId, attempt } = request.body as { worker_id: string; attempt: number };
  await checkWorkerOwner(context.store.db, workerId, request.principal);
  return { taskId, workerId, attempt };
}

/**
 * Returns the job id of the task when the worker held the lease attempt it names, or undefined.
 * The task row keeps the worker and attempt of its last claim, and each claim writes a
 * `task_claimed` audit row with both, which covers attempts that a later claim replaced.
 */
async function heldAttemptJob(
  db: Kysely<Database>,
  holder: LeaseHolder,
): Promise<string | undefined> {
  const task = await db
    .selectFrom('tasks')
    .select(['job_id', 'worker_id', 'attempt'])
    .where('id', '=', holder.taskId)
    .executeTakeFirst();
  if (task === undefined) return undefined;
  if (task.worker_id === holder.workerId && task.attempt === holder.attempt) return task.job_id;
  // NOTE: the cleanup deletes audit rows older than the audit-log retention. A report on an
  // earlier attempt whose task_claimed row is gone is therefore not recorded either.
  const claim = await db
    .selectFrom('audit_log')
    .select('id')
    .where('job_id', '=', task.job_id)
    .where('task_id', '=', holder.taskId)
    .where('action', '=', 'task_claimed')
    .where(sql`json_extract(details, '$.worker_id')`, '=', holder.workerId)
    .where(sql`json_extract(details, '$.attempt')`, '=', holder.attempt)
    .executeTakeFirst();
  return claim === undefined ? undefined : task.job_id;
}

function workerNotOnline(workerId: string, status: string): ApiError {
  return new ApiError(
    'worker_not_online',
    `worker ${JSON.stringify(workerId)} is ${status}, so it may not claim tasks; register it again with POST /api/agent/workers`,
    'worker_id',
    'online',
    { status },
  );
}

/** Returns the API error for a claim the worker may not make. */
function rejectionError(rejected: ClaimRejected): ApiError {
  if (rejected.status === null) return workerNotFound(rejected.workerId);
  if (rejected.sessionReplaced) return workerSessionReplaced(rejected.workerId);
  return workerNotOnline(rejected.workerId, rejected.status);
}

function workerSessionReplaced(workerId: string): ApiError {
  return new ApiError(
    'worker_session_replaced',
    `worker id ${JSON.stringify(workerId)} was registered by another process after this one, ` +
      'so this process may not claim under it; register again, or give each worker process ' +
      'its own SLIPWAY_WORKER_NAME',
    'session',
    'current',
  );
}

function workerIdInUse(workerId: string, hostname: string, lastSeen: string): ApiError {
  return new ApiError(
    'worker_id_in_use',
    `worker id ${JSON.stringify(workerId)} is already online on host ${JSON.stringify(hostname)} ` +
      `(last seen ${lastSeen}) from another process; give each worker process its own ` +
      'SLIPWAY_WORKER_NAME, or stop the other process and wait until its heartbeat is stale',
    'worker_id',
    'unique',
  );
}

function workerNotFound(workerId: string): ApiError {
  return new ApiError(
    'worker_not_found',
    `worker ${JSON.stringify(workerId)} is not registered; register it with POST /api/agent/workers first`,
    'worker_id',
    'registered',
  );
}

/**
 * Stores which registered executors the claim leaves out, when that changed since the last
 * claim, with an audit row. A worker leaves out docker while its engine does not respond, and
 * GET /api/job names such workers for a queued job that waits for them.
 */
async function recordUnavailableExecutors(
  store: AppContext['store'],
  worker: { id: string; unavailable_executors: string | null },
  registered: string[],
  claimed: string[] | undefined,
  audit: ReturnType<typeof auditContext>,
): Promise<void> {
  const unavailable =
    claimed === undefined ? [] : registered.filter((name) => !claimed.includes(name));
  const stored = JSON.parse(worker.unavailable_executors ?? '[]') as string[];
  if (stored.join('\n') === unavailable.join('\n')) return;
  await store.write(async (trx) => {
    await trx
      .updateTable('workers')
      .set({ unavailable_executors: unavailable.length === 0 ? null : JSON.stringify(unavailable) })
      .where('id', '=', worker.id)
      .execute();
    await appendAudit(trx, audit, {
      action: 'worker_executors_changed',
      details: { worker_id: worker.id, unavailable_executors: unavailable },
    });
  });
}
