/**
 * Bounds for every number in request schemas. JSON allows numbers of any size, and Ajv
 * accepts 1e308 as an integer. A STRICT table's INTEGER column rejects a number beyond
 * SQLite's 64-bit range, so `"exit_code": 99999999999999999999` made the finish endpoint fail
 * with 500. A number without its own bounds now gets JavaScript's safe integer range, which
 * also keeps every stored integer exact, and a value outside it is a 400 with rule `maximum`.
 */
import type { FastifyInstance } from 'fastify';

type SchemaNode = Record<string, unknown>;

/** Adds the safe-integer range to number schemas in each route's body, query and params. */
export function boundRequestNumbers(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as Record<string, unknown> | undefined;
    if (schema === undefined) return;
    for (const part of ['body', 'querystring', 'params', 'headers']) {
      if (schema[part] !== undefined) boundNumbers(schema[part], new Set());
    }
  });
}

function boundNumbers(node: unknown, seen: Set<unknown>): void {
  if (node === null || typeof node !== 'object' || seen.has(node)) return;
  seen.add(node);
  if (Array.isArray(node)) {
    for (const item of node) boundNumbers(item, seen);
    return;
  }
  const schema = node as SchemaNode;
  if (schema.type === 'integer' || schema.type === 'number') {
    schema.maximum ??= Number.MAX_SAFE_INTEGER;
    schema.minimum ??= Number.MIN_SAFE_INTEGER;
  }
  for (const value of Object.values(schema)) boundNumbers(value, seen);
}
