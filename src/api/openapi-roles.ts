/**
 * Adds each route's token roles to its OpenAPI description, so /api/docs and docs/api.md show
 * which token may call it. The roles are the route's `config.roles`, the list that the auth
 * hook enforces, plus `admin`, which passes everywhere, and then the route's `config.roleNote`.
 */
import type { FastifyInstance } from 'fastify';

export function describeRouteRoles(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const config = route.config as { roles?: readonly string[]; roleNote?: string } | undefined;
    const roles = config?.roles;
    if (roles === undefined || route.schema === undefined) return;
    const note = [
      `Token role: ${[...new Set([...roles, 'admin'])].join(' or ')}.`,
      config?.roleNote,
    ]
      .filter((part) => part !== undefined)
      .join(' ');
    const description = route.schema.description;
    route.schema = {
      ...route.schema,
      description: description === undefined ? note : `${description}\n\n${note}`,
    };
  });
}
