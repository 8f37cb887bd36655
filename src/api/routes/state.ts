/** Reading the state variables (LAST_DEPLOYED_COMMIT, DEPLOY_STATUS, HEALTH_STATUS, ...). */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { listStateVariables } from '../../store/state-variables.js';
import { ErrorSchema } from '../schemas.js';

const Nullable = Type.Union([Type.String(), Type.Null()]);

export function registerStateRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/state',
    {
      schema: {
        tags: ['state'],
        summary: 'All state variables',
        security: [{ bearerAuth: [] }],
        response: {
          200: Type.Object({
            variables: Type.Record(Type.String(), Type.String(), {
              description: 'name to value',
            }),
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
      const rows = await listStateVariables(context.store.db);
      return {
        variables: Object.fromEntries(rows.map((row) => [row.name, row.value])),
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
