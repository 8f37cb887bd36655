/**
 * The API's JSON body parser. It replaces Fastify's default one so that a bad body gets one
 * clear message with the parser's position, prototype keys get their own message, and routes
 * that take an optional body can accept an empty one.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { headerCount } from './auth.js';
import { ApiError } from './errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** An empty `application/json` body counts as no body instead of invalid JSON. */
    emptyBodyAllowed?: boolean;
  }
}

/** A decoder that throws on bytes that are not UTF-8, which RFC 8259 section 8.1 requires of JSON. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Sets a missing body to `{}`, for routes whose body is optional. A JSON `null`, array or other
 * value that is not an object stays as sent, so the route's schema rejects it.
 */
export async function treatNoBodyAsEmptyObject(request: FastifyRequest): Promise<void> {
  if (request.body === undefined) request.body = {};
}

export function registerJsonBodyParser(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  // Every body is JSON. With Fastify's text parser a text/plain body reached validation as a
  // string ("body must be a JSON object") while other types got 415; now all of them do.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    // Node keeps the first of two Content-Type headers and drops the other, so a body sent as
    // two types would be read as the first without a word.
    if (headerCount(request, 'content-type') > 1) {
      done(
        new ApiError(
          'validation_failed',
          'the request has more than one Content-Type header; send one: "Content-Type: application/json"',
          'Content-Type',
          'single',
        ),
      );
      return;
    }
    const encoding = request.headers['content-encoding'];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      // The body would be compressed bytes, which JSON.parse would quote back in its message.
      done(
        new ApiError(
          'unsupported_media_type',
          `bodies with Content-Encoding ${JSON.stringify(encoding)} are not accepted; send plain JSON`,
          'Content-Encoding',
          'identity',
        ),
      );
      return;
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(request.headers['content-type'] ?? '');
    if (charset !== null && !/^utf-?8$/i.test(charset[1]!)) {
      // JSON is UTF-8 (RFC 8259 section 8.1); decoding other text as UTF-8 would change it.
      done(
        new ApiError(
          'unsupported_media_type',
          `charset ${JSON.stringify(charset[1])} is not accepted; send JSON as UTF-8`,
          'Content-Type',
          'charset',
        ),
      );
      return;
    }
    let text: string;
    try {
      text = UTF8.decode(body as Buffer);
    } catch {
      // Decoding with replacement would store U+FFFD in place of the bytes the client sent.
      done(new ApiError('invalid_json', 'the body is not valid UTF-8', 'body', 'utf8'));
      return;
    }
    if (text.trim() === '') {
      if (request.routeOptions.config?.emptyBodyAllowed === true) {
        done(null, undefined);
        return;
      }
      done(
        new ApiError(
          'invalid_json',
          'the body is empty but Content-Type is application/json; send a JSON object',
          'body',
          'json',
        ),
      );
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      // Node 20's (V8) message names the position ("... in JSON at position 6") or quotes the text.
      const reason = (error as SyntaxError).message;
      done(new ApiError('invalid_json', `the body is not valid JSON: ${reason}`, 'body', 'json'));
      return;
    }
    const repeated = findRepeatedKey(text);
    if (repeated !== undefined) {
      done(
        new ApiError(
          'invalid_json',
          `the body repeats the key "${repeated}" in one object; JSON.parse would keep only ` +
            'the last value, so send each key once',
          'body',
          'uniqueKeys',
        ),
      );
      return;
    }
    const broken = findLoneSurrogate(text, value);
    if (broken !== undefined) {
      done(
        new ApiError(
          'validation_failed',
          `${broken.field} ${broken.inKey ? 'has a key that contains' : 'contains'} a lone ` +
            'UTF-16 surrogate, which has no UTF-8 form and would be stored as other text; ' +
            'send valid Unicode',
          broken.field,
          'unicode',
        ),
      );
      return;
    }
    const key = findPrototypeKey(value);
    if (key !== undefined) {
      done(
        new ApiError(
          'invalid_json',
          `the body contains the key "${key}"; such keys are rejected because they can ` +
            'change object prototypes, so rename the key',
          'body',
          'json',
        ),
      );
      return;
    }
    done(null, value);
  });
}

/** The keys of an object seen so far while scanning, or null for an array. */
type Scope = Set<string> | null;

/**
 * Returns the first key that appears twice in one object of `text`, which must be valid JSON.
 * A proxy or another parser may keep the first value where JSON.parse keeps the last, so a
 * repeated key could mean different requests to them and to Slipway.
 */
export function findRepeatedKey(text: string): string | undefined {
  // A body without strings has no keys.
  if (text.indexOf('"') === -1) return undefined;
  const scopes: Scope[] = [];
  let expectKey = false;
  for (let index = 0; index < text.length; index += 1) {
    const char = text[index];
    if (char === '"') {
      const end = stringEnd(text, index);
      const scope = scopes.at(-1);
      if (expectKey && scope) {
        const key = JSON.parse(text.slice(index, end + 1)) as string;
        if (scope.has(key)) return key;
        scope.add(key);
      }
      expectKey = false;
      index = end;
    } else if (char === '{') {
      scopes.push(new Set());
      expectKey = true;
    } else if (char === '[') {
      scopes.push(null);
    } else if (char === '}' || char === ']') {
      scopes.pop();
    } else if (char === ',') {
      expectKey = scopes.at(-1) !== null;
    }
  }
  return undefined;
}

/** Returns the index of the quote that closes the string opening at `start`. */
function stringEnd(text: string, start: number): number {
  let index = start + 1;
  while (text[index] !== '"') index += text[index] === '\\' ? 2 : 1;
  return index;
}

/** Escapes of UTF-16 surrogates. JSON text can carry a lone surrogate only as such an escape. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** A lone surrogate. With the `u` flag, a valid pair is one code point and does not match. */
const LONE_SURROGATE = /\p{Cs}/u;

/** A value met in a walk, linked to its parent so that its path is built only when needed. */
interface WalkNode {
  value: unknown;
  key: string;
  parent: WalkNode | undefined;
}

/**
 * Returns the place of a string, or object key, in `value` that contains a lone UTF-16
 * surrogate. `text` is the JSON that `value` was parsed from. The field is a dotted path, as in
 * validation errors, or `body` for the body itself.
 */
function findLoneSurrogate(
  text: string,
  value: unknown,
): { field: string; inKey: boolean } | undefined {
  if (!SURROGATE_ESCAPE.test(text)) return undefined;
  const stack: WalkNode[] = [{ value, key: '', parent: undefined }];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (typeof node.value === 'string') {
      if (LONE_SURROGATE.test(node.value)) return { field: fieldOf(node), inKey: false };
      continue;
    }
    if (node.value === null || typeof node.value !== 'object') continue;
    for (const [key, child] of Object.entries(node.value)) {
      if (LONE_SURROGATE.test(key)) return { field: fieldOf(node), inKey: true };
      stack.push({ value: child, key, parent: node });
    }
  }
  return undefined;
}

/** Returns the dotted path of a node, or `body` for the root. */
function fieldOf(node: WalkNode): string {
  const keys: string[] = [];
  for (let current = node; current.parent !== undefined; current = current.parent) {
    keys.push(current.key);
  }
  return keys.length > 0 ? keys.reverse().join('.') : 'body';
}

/**
 * Returns `__proto__` or `constructor.prototype` when any object in `value` has such a key.
 * The walk uses an explicit stack, so deeply nested bodies cannot overflow the call stack.
 */
function findPrototypeKey(value: unknown): string | undefined {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const current = stack.pop();
    if (current === null || typeof current !== 'object') continue;
    if (Array.isArray(current)) {
      for (const item of current) stack.push(item);
      continue;
    }
    for (const [key, child] of Object.entries(current)) {
      if (key === '__proto__') return key;
      const isPrototypeObject = child !== null && typeof child === 'object';
      if (key === 'constructor' && isPrototypeObject && Object.hasOwn(child, 'prototype')) {
        return 'constructor.prototype';
      }
      stack.push(child);
    }
  }
  return undefined;
}
