/** `POST /api/recovery/execute` and `POST /api/rollback/execute` (admin). */
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { runRecoveryProcedure } from '../../orchestrator/recovery.js';
import { executeRollback } from '../../orchestrator/rollback.js';
import { ApiError } from '../errors.js';
import { treatNoBodyAsEmptyObject } from '../json-body.js';
import { checkBranchAndParams } from './triggers.js';
import { auditContext } from '../request-context.js';
import { CommitSchema, ErrorSchema, StatusSchema } from '../schemas.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };

const RecoveryBody = Type.Object(
  {
    procedure: Type.String({
      pattern: '^[a-z][a-z0-9_-]{0,62}$',
      description: 'name of a procedure under `recovery:` in the pipeline file',
    }),
    commit: Type.Optional(CommitSchema),
    branch: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    params: Type.Optional(
      Type.Record(Type.String({ maxLength: 100 }), Type.Unknown(), { maxProperties: 100 }),
    ),
  },
  { additionalProperties: false },
);

const RecoveryJobSchema = Type.Object({
  job_id: Type.String(),
  type: Type.String(),
  status: StatusSchema,
});

const RecoveryReply = Type.Object({
  procedure: Type.String(),
  action: Type.String(),
  ok: Type.Boolean(),
  message: Type.String(),
  jobs: Type.Array(RecoveryJobSchema),
  container: Type.Optional(Type.Object({ name: Type.String(), status: Type.String() })),
});

const RollbackBody = Type.Object(
  { commit: Type.Optional(CommitSchema) },
  { additionalProperties: false },
);

const RollbackReply = Type.Object({
  job_id: Type.String(),
  status: StatusSchema,
  commit: Type.String({ description: 'the commit being deployed' }),
  replacing: Type.Union([Type.String(), Type.Null()], {
    description: 'LAST_DEPLOYED_COMMIT when the rollback was requested',
  }),
});

export function registerRecoveryRoutes(app: FastifyInstance, context: AppContext): void {
  app.post(
    '/api/recovery/execute',
    {
      schema: {
        tags: ['recovery'],
        summary: 'Run a recovery procedure of the pipeline file',
        description:
          'restart_container restarts a container, rerun_failed starts new attempts of the ' +
          'failed and skipped jobs of `commit` (default LAST_DEPLOYED_COMMIT), run_pipeline ' +
          'triggers its pipeline. 502 `recovery_failed` when the procedure ran and failed.',
        security: [{ bearerAuth: [] }],
        body: RecoveryBody,
        response: { 200: RecoveryReply, ...errors, 502: ErrorSchema },
      },
      config: { roles: ['admin'] },
    },
    async (request) => {
      const body = request.body as Static<typeof RecoveryBody>;
      // A run_pipeline procedure passes these on to triggerJob, as a trigger request does.
      checkBranchAndParams(body);
      const result = await runRecoveryProcedure(
        context,
        body.procedure,
        { commit: body.commit, branch: body.branch, params: body.params },
        auditContext(request),
      );
      if (!result.ok) {
        throw new ApiError('recovery_failed', result.message, 'procedure', 'succeeded', {
          result,
        });
      }
      return result;
    },
  );

  app.post(
    '/api/rollback/execute',
    {
      schema: {
        tags: ['recovery'],
        summary: 'Deploy the last known-good commit, or the given one',
        description:
          'Without `commit`, deploys the commit of the latest successful deploy whose commit ' +
          'differs from LAST_DEPLOYED_COMMIT and was not replaced by a later successful ' +
          'rollback, so repeated rollbacks go further back; 409 `no_previous_deploy` when ' +
          'there is none.',
        security: [{ bearerAuth: [] }],
        body: RollbackBody,
        response: { 201: RollbackReply, ...errors, 409: ErrorSchema },
      },
      config: { roles: ['admin'] },
      // `curl -X POST .../rollback/execute` sends no body at all; treat that as `{}`.
      preValidation: treatNoBodyAsEmptyObject,
    },
    async (request, reply) => {
      const body = request.body as Static<typeof RollbackBody>;
      const result = await executeRollback(
        context,
        body.commit?.toLowerCase(),
        auditContext(request),
      );
      reply.code(201);
      return {
        job_id: result.job.id,
        status: result.job.status,
        commit: result.commit,
        replacing: result.replacing,
      };
    },
  );
}
