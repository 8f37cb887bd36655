/** Reading, cancelling, retrying and updating one job. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { isTerminal, STATUSES } from '../../jobs/status.js';
import { cancelJob } from '../../orchestrator/cancel.js';
import { ChangeSet } from '../../orchestrator/changes.js';
import { retryJob } from '../../orchestrator/retry.js';
import { updateJobStatus } from '../../orchestrator/update-status.js';
import { findJob, readJob } from '../../store/jobs.js';
import { ApiError, jobNotFound } from '../errors.js';
import { treatNoBodyAsEmptyObject } from '../json-body.js';
import { checkJobOwner, OIDC_JOB_OWNER_NOTE } from '../job-owner.js';
import { jobView, readJobView } from '../job-view.js';
import { auditContext } from '../request-context.js';
import { checkWorkerOwner } from '../worker-owner.js';
import { ResponseCache } from '../response-cache.js';
import {
  ErrorSchema,
  EXIT_CODE_RULE,
  JobIdParams,
  JobSchema,
  PrintableReason,
  StatusSchema,
} from '../schemas.js';
import { ADMIN_JOB_TYPES, checkTypeRole } from './triggers.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };

const JSON_TYPE = 'application/json; charset=utf-8';

export function registerJobRoutes(app: FastifyInstance, context: AppContext): void {
  const views = new ResponseCache();
  app.get(
    '/api/job/:job_id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'The job, its tasks and their statuses',
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        response: { 200: JobSchema, ...errors },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      // Pollers read the same job again and again. While nothing was committed, the response
      // is the one already serialised.
      const version = (request.dataVersion ??= context.store.dataVersion());
      let body = views.get(id, version);
      if (body === undefined) {
        const view = readJobView(context.store, context.config, id);
        if (view === undefined) throw jobNotFound(id);
        body = reply.serialize(view) as string;
        views.set(id, version, body);
      }
      return reply.type(JSON_TYPE).send(body);
    },
  );

  app.post(
    '/api/job/:job_id/cancel',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Cancel the job; running containers and processes stop within seconds',
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        body: Type.Object(
          { reason: Type.Optional(PrintableReason(500)) },
          { additionalProperties: false },
        ),
        response: {
          202: {
            ...JobSchema,
            description:
              'the cancel is recorded: tasks no worker holds end cancelled now, and running ones stop within seconds; a task that finishes first keeps its result',
          },
          ...errors,
          409: ErrorSchema,
        },
      },
      config: { roles: ['trigger'], emptyBodyAllowed: true, roleNote: OIDC_JOB_OWNER_NOTE },
      // `curl -X POST .../cancel` sends no body at all, and some clients send an empty one
      // with Content-Type: application/json; treat both as an empty object.
      preValidation: treatNoBodyAsEmptyObject,
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      const body = request.body as { reason?: string };
      const audit = auditContext(request);
      const changes = new ChangeSet();
      const view = await context.store.write(async (trx) => {
        const job = await findJob(trx, id);
        if (job === undefined) throw jobNotFound(id);
        const forbidden = checkJobOwner(job, request.principal, 'cancel');
        if (forbidden !== undefined) throw forbidden;
        if (isTerminal(job.status)) {
          throw new ApiError(
            'job_finished',
            `job ${id} already ended ${job.status}; nothing to cancel`,
            'job_id',
            'active',
            {
              status: job.status,
            },
          );
        }
        const reason = body.reason ?? `cancelled by ${audit.actor}`;
        const updated = await cancelJob(trx, job, reason, changes, audit);
        const tasks = await trx
          .selectFrom('tasks')
          .selectAll()
          .where('job_id', '=', id)
          .where('job_attempt', '=', updated.attempt)
          .orderBy('idx')
          .execute();
        return jobView(updated, tasks);
      });
      changes.emit(context.events);
      reply.code(202);
      return view;
    },
  );

  app.post(
    '/api/job/:job_id/retry',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Start a new attempt of a finished job',
        description:
          'The new attempt runs the pipeline definition stored with the job when it was ' +
          'triggered, not the pipeline file loaded now, so an edited step applies only to jobs ' +
          'triggered after the edit. Its dependencies are checked again, against the `needs` of ' +
          'the pipeline file loaded now.',
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        // Retry takes no fields; an unknown one is rejected as on cancel, not ignored.
        body: Type.Object({}, { additionalProperties: false }),
        response: { 201: JobSchema, ...errors, 409: ErrorSchema },
      },
      config: {
        roles: ['trigger'],
        emptyBodyAllowed: true,
        roleNote:
          `Jobs of the types ${[...ADMIN_JOB_TYPES.keys()].join(' and ')} need role admin. ` +
          OIDC_JOB_OWNER_NOTE,
      },
      preValidation: treatNoBodyAsEmptyObject,
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      const job = context.store.read((sqlite) => readJob(sqlite, id));
      if (job === undefined) throw jobNotFound(id);
      // Another attempt of a rollback deploys its older commit again, so it needs admin too.
      const forbidden =
        checkJobOwner(job, request.principal, 'retry') ??
        checkTypeRole(job.type, request.principal);
      if (forbidden !== undefined) throw forbidden;
      await retryJob(context, id, auditContext(request));
      reply.code(201);
      return readJobView(context.store, context.config, id);
    },
  );

  app.patch(
    '/api/job/:job_id/status',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Set the status of every active task of the job (internal; for workers)',
        description:
          `Allowed statuses: ${STATUSES.join(', ')}. An illegal transition gets 409. So does ` +
          'waiting to queued while a job type that the job depends on has not succeeded for ' +
          'its commit (`dependency_not_met`). So does running while another job of its ' +
          'concurrency group runs or an older one is queued (`concurrency_group_busy`), and ' +
          'queued while a worker runs one of its tasks. A final status ends a task that a ' +
          'worker runs at once. The worker stops the step at its next heartbeat, and the other ' +
          'jobs of the concurrency group wait until it reports the step stopped.',
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        body: Type.Object(
          {
            status: StatusSchema,
            reason: Type.Optional(PrintableReason(2000)),
            exit_code: Type.Optional(
              Type.Integer({ minimum: -255, maximum: 255, description: EXIT_CODE_RULE }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: JobSchema, ...errors, 409: ErrorSchema },
      },
      config: { roles: ['agent'] },
    },
    async (request) => {
      const { job_id: id } = request.params as { job_id: string };
      const body = request.body as {
        status: (typeof STATUSES)[number];
        reason?: string;
        exit_code?: number;
      };
      // An agent token changes running tasks only on the workers it may act for, as in the
      // agent API's task reports.
      await updateJobStatus(
        context,
        id,
        { status: body.status, reason: body.reason, exitCode: body.exit_code },
        auditContext(request),
        async (trx, workerIds) => {
          for (const workerId of workerIds) {
            await checkWorkerOwner(trx, workerId, request.principal);
          }
        },
      );
      return readJobView(context.store, context.config, id);
    },
  );
}
