/** Reading the state variables (LAST_DEPLOYED_COMMIT, DEPLOY_STATUS, HEALTH_STATUS, ...). */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { countJobsByStatus } from '../../store/jobs.js';
import { listStateVariables } from '../../store/state-variables.js';
import { nowIso } from '../../util/time.js';
import { ErrorSchema } from '../schemas.js';

const Nullable = Type.Union([Type.String(), Type.Null()]);

export function registerStateRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/state',
    {
      schema: {
        tags: ['state'],
        summary: 'All state variables, job counts by status and the dependency rules',
        security: [{ bearerAuth: [] }],
        response: {
          200: Type.Object({
            variables: Type.Record(Type.String(), Type.String(), {
              description: 'name to value',
            }),
            jobs: Type.Record(Type.String(), Type.Integer(), {
              description: 'job count by status; statuses without a job are left out',
            }),
            dependencies: Type.Array(
              Type.Object({
                workflow: Type.String(),
                depends_on: Type.String(),
                source: Type.String(),
              }),
            ),
            timestamp: Type.String(),
            entries: Type.Array(
              Type.Object({
                name: Type.String(),
                value: Type.String(),
                updated_at: Type.String(),
                synced_at: Nullable,
              }),
            ),
          }),
          401: ErrorSchema,
          403: ErrorSchema,
        },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async () => {
      const db = context.store.db;
      const rows = await listStateVariables(db);
      const dependencies = await db
        .selectFrom('workflow_dependencies')
        .select(['workflow', 'depends_on', 'source'])
        .orderBy('workflow')
        .orderBy('depends_on')
        .execute();
      return {
        variables: Object.fromEntries(rows.map((row) => [row.name, row.value])),
        jobs: await countJobsByStatus(db),
        dependencies,
        timestamp: nowIso(),
        entries: rows.map(({ name, value, updated_at, synced_at }) => ({
          name,
          value,
          updated_at,
          synced_at,
        })),
      };
    },
  );
}
