/**
 * Adds to each route's documented responses the errors that the server's shared hooks can
 * return on any route, so that the OpenAPI document lists them even where the route module
 * does not.
 */
import type { FastifyInstance, FastifySchema } from 'fastify';
import { ErrorSchema } from './schemas.js';

export interface SharedLimits {
  /** Whether API_RATE_LIMIT is above 0, so that every route can return 429. */
  rateLimit: boolean;
  /** Whether API_AUTH_FAILURE_LIMIT is above 0, so that every route with roles can return 429. */
  authFailureLimit: boolean;
}

export function documentSharedResponses(app: FastifyInstance, limits: SharedLimits): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as
      (FastifySchema & { hide?: boolean; response?: Record<string, unknown> }) | undefined;
    if (schema?.response === undefined || schema.hide === true) return;
    // Every route can return 400, because the shared hooks reject an unknown, repeated or
    // badly encoded query parameter, a second Authorization header, and an HTTP/1.1 request
    // without exactly one Host header.
    const shared: Record<number, unknown> = { 400: ErrorSchema };
    // The JSON body parser rejects a body over the route's limit and one of another type.
    if (schema.body !== undefined) {
      shared[413] = ErrorSchema;
      shared[415] = ErrorSchema;
    }
    // Any request can get 503 while the server stops, when the database stays locked past
    // its busy timeout, or when storage fails (see errors.ts). A route's own 503 comes first.
    shared[503] = ErrorSchema;
    const needsToken = route.config?.roles !== undefined;
    if (limits.rateLimit || (limits.authFailureLimit && needsToken)) shared[429] = ErrorSchema;
    route.schema = { ...schema, response: { ...shared, ...schema.response } };
  });
}
