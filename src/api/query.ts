/**
 * Conversion of query strings to their schema's types. Query values always arrive as text, so
 * `?limit=20` must become the integer 20 before validation. Bodies are never converted, because
 * a JSON body carries its own types and a wrong one is an error.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  FastifySchema,
  HookHandlerDoneFunction,
} from 'fastify';
import { ApiError } from './errors.js';

/** Query schema of a route that takes no query parameters. */
const NO_QUERY = Type.Object({}, { additionalProperties: false });

/**
 * Gives each route without a query schema one that allows no parameters, so that
 * `POST /api/trigger/ci?commit=...` gets 400 unknown_field as an unknown parameter of
 * `GET /api/admin/jobs` does, instead of being ignored. Routes hidden from the OpenAPI document
 * (the Swagger UI's files and /api/openapi.json) keep taking any query.
 */
export function rejectUnknownQueries(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as (FastifySchema & { hide?: boolean }) | undefined;
    if (schema?.hide === true || schema?.querystring !== undefined) return;
    route.schema = { ...schema, querystring: NO_QUERY };
  });
}

/**
 * Rejects a query whose names or values are not valid percent-encoding (`%ZZ`, or bytes that
 * are not UTF-8, such as `%C3%28`). Fastify's parser keeps such text as it is, so a filter
 * would silently match nothing, while the same text in the path gets 400. Runs as a
 * preValidation hook.
 */
export function rejectBadQueryEncoding(
  request: FastifyRequest,
  _reply: FastifyReply,
  done: HookHandlerDoneFunction,
): void {
  const start = request.url.indexOf('?');
  if (start < 0) {
    done();
    return;
  }
  for (const pair of request.url.slice(start + 1).split('&')) {
    const equals = pair.indexOf('=');
    const name = equals < 0 ? pair : pair.slice(0, equals);
    for (const part of equals < 0 ? [pair] : [name, pair.slice(equals + 1)]) {
      try {
        decodeURIComponent(part.replace(/\+/g, ' '));
      } catch {
        done(
          new ApiError(
            'validation_failed',
            `query parameter ${JSON.stringify(name.slice(0, 100))} is not valid percent-encoding; ` +
              'encode each byte as % and two hex digits, and text as UTF-8',
            name.slice(0, 100),
            'encoding',
          ),
        );
        return;
      }
    }
  }
  done();
}

/**
 * Rejects a query parameter of the route's schema that the request repeats
 * (`?limit=1&limit=2`). Fastify's parser turns it into a list, which would otherwise be
 * reported as the wrong type. Runs as a preValidation hook, before convertQuery.
 */
export function rejectRepeatedQuery(
  request: FastifyRequest,
  _reply: FastifyReply,
  done: HookHandlerDoneFunction,
): void {
  const schema = request.routeOptions.schema?.querystring as TSchema | undefined;
  const properties = (schema?.properties ?? {}) as Record<string, TSchema>;
  const query = (request.query ?? {}) as Record<string, unknown>;
  const repeated = Object.keys(query).find(
    (key) => Object.hasOwn(properties, key) && Array.isArray(query[key]),
  );
  if (repeated === undefined) {
    done();
    return;
  }
  done(
    new ApiError(
      'validation_failed',
      `query parameter ${repeated} appears ${(query[repeated] as unknown[]).length} times; send it once`,
      repeated,
      'single',
    ),
  );
}

/** Converts the query of a route with a TypeBox querystring schema. Runs as a preValidation hook. */
export function convertQuery(
  request: FastifyRequest,
  _reply: FastifyReply,
  done: HookHandlerDoneFunction,
): void {
  const schema = request.routeOptions.schema?.querystring as TSchema | undefined;
  if (schema !== undefined && request.query !== null && typeof request.query === 'object') {
    // Value.Convert changes the object it receives, so it gets a copy.
    const original = { ...(request.query as Record<string, unknown>) };
    // It leaves values it cannot convert as they are, so validation still rejects them.
    const converted = Value.Convert(schema, { ...original }) as Record<string, unknown>;
    // It also turns "1e3" or "1.5" into the integer 1, so such a value stays text and fails.
    const properties = (schema.properties ?? {}) as Record<string, TSchema>;
    for (const [key, value] of Object.entries(original)) {
      const type = properties[key]?.type;
      if (typeof value !== 'string') continue;
      if (
        (type === 'integer' && !INTEGER.test(value)) ||
        (type === 'number' && !NUMBER.test(value))
      ) {
        converted[key] = value;
      }
    }
    request.query = converted;
  }
  done();
}

const INTEGER = /^-?\d+$/;
const NUMBER = /^-?\d+(\.\d+)?$/;

/**
 * Parses a `date-time` query value. The format check passes RFC 3339 leap seconds such as
 * `23:59:60Z`, which JavaScript dates cannot represent, so those are rejected here with 400.
 */
export function parseQueryTime(value: string, field: string): Date {
  const time = new Date(value);
  if (Number.isNaN(time.getTime())) {
    throw new ApiError(
      'validation_failed',
      `query parameter ${field} "${value}" is not a time this server can use; give one like 2024-01-31T12:00:00Z`,
      field,
      'format',
    );
  }
  return time;
}
