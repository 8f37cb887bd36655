/**
 * Adds to each route's documented responses the errors that the server's shared hooks can
 * return on any route, so that the OpenAPI document lists them even where the route module
 * does not.
 */
import type { FastifyInstance, FastifySchema } from 'fastify';
import { ErrorSchema } from './schemas.js';

/**
 * Every route can return 400, because the shared hooks reject an unknown, repeated or badly
 * encoded query parameter, a second Authorization header, and an HTTP/1.1 request without
 * exactly one Host header.
 */
const SHARED_RESPONSES = { 400: ErrorSchema };

export function documentSharedResponses(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as
      (FastifySchema & { hide?: boolean; response?: Record<string, unknown> }) | undefined;
    if (schema?.response === undefined || schema.hide === true) return;
    route.schema = { ...schema, response: { ...SHARED_RESPONSES, ...schema.response } };
  });
}
