/**
 * The HTTP server: Fastify with TypeBox schemas on every route, one error shape, bearer-token
 * roles, per-token rate limits, a limit on failed authentications per address and the OpenAPI
 * document. Route modules add themselves through
 * ROUTE_MODULES; each receives the Fastify instance and the process's AppContext.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import FindMyWay from 'find-my-way';
import type { AppContext } from '../app/context.js';
import { isClusterWorker } from '../app/cluster.js';
import { registerAuth, TokenVerifier, bearerToken, headerCount } from './auth.js';
import { OidcVerifier } from './oidc.js';
import { SharedFailureLimit, sharedQuotaStore } from './shared-rate-limit.js';
import { addressKey, AuthFailureLimiter, type FailureLimit } from './auth-failures.js';
import { registerJsonBodyParser, treatNoBodyAsEmptyObject } from './json-body.js';
import { deferredChildLogger, RequestLogController } from './request-logger.js';
import { ApiError, errorBody, ERROR_CODES } from './errors.js';
import { HOSTNAME_PATTERN, PRINTABLE_TEXT_PATTERN } from './schemas.js';
import {
  convertQuery,
  rejectBadQueryEncoding,
  rejectRepeatedQuery,
  rejectUnknownQueries,
} from './query.js';
import { hashToken, isTokenActive, storeTokenUse } from '../store/tokens.js';
import { isBusyError } from '../store/write-queue.js';
import { RepeatedErrors } from '../util/repeated-errors.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerAgentRoutes } from './routes/agent.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerJobRoutes } from './routes/jobs.js';
import { registerLogRoutes } from './routes/logs.js';
import { registerMetricsRoutes } from './routes/metrics.js';
import { registerRecoveryRoutes } from './routes/recovery.js';
import { registerStateRoutes } from './routes/state.js';
import { registerTriggerRoutes } from './routes/triggers.js';
import { registerGitHubRoutes } from '../github/routes.js';
import { describeRouteRoles } from './openapi-roles.js';
import { documentSharedResponses } from './shared-responses.js';
import { boundRequestNumbers } from './number-bounds.js';
import { clientAddress } from './request-context.js';
import { stopAccepting } from './drain.js';
import { BodyDrains, socketResponse } from './close-after-body.js';

/**
 * Copies every route that `app` registers from here on into a second router, and returns a
 * function that lists the methods a path has routes for. Fastify sends an unregistered method
 * on a known path to the not-found handler, which uses this to respond with 405 instead.
 */
function recordRouteMethods(app: FastifyInstance): (path: string) => string[] {
  // Any parameter length, so a path whose parameter is too long for the API still gets 405.
  const router = FindMyWay({ maxParamLength: 100_000 });
  const methods = new Set<string>();
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      methods.add(method);
      // Fastify adds a HEAD route for each GET route, and a path may be registered twice.
      if (router.hasRoute(method as FindMyWay.HTTPMethod, route.url)) continue;
      router.on(method as FindMyWay.HTTPMethod, route.url, () => undefined);
    }
  });
  return (path) =>
    [...methods]
      .filter((method) => router.find(method as FindMyWay.HTTPMethod, path) !== null)
      .sort();
}

/**
 * Records `<method> <OpenAPI path>` of each route that treats a missing body as `{}`, as it
 * is registered.
 */
function recordOptionalBodies(app: FastifyInstance): Set<string> {
  const routes = new Set<string>();
  app.addHook('onRoute', (route) => {
    if (![route.preValidation].flat().includes(treatNoBodyAsEmptyObject)) return;
    const openApiPath = route.url.replace(/:(\w+)/g, '{$1}');
    for (const method of [route.method].flat())
      routes.add(`${method.toLowerCase()} ${openApiPath}`);
  });
  return routes;
}

/** Sets `requestBody.required` to false on the operations of `routes`. */
function markOptionalBodies<T extends { paths?: object }>(document: T, routes: Set<string>): T {
  const paths = (document.paths ?? {}) as Record<
    string,
    Record<string, { requestBody?: { required?: boolean } }>
  >;
  for (const [openApiPath, operations] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      if (routes.has(`${method} ${openApiPath}`) && operation.requestBody !== undefined) {
        operation.requestBody.required = false;
      }
    }
  }
  return document;
}

export type RouteModule = (app: FastifyInstance, context: AppContext) => void | Promise<void>;

/** Every route module of the API, in the order they appear in the OpenAPI document. */
export const ROUTE_MODULES: RouteModule[] = [
  registerTriggerRoutes,
  registerJobRoutes,
  registerLogRoutes,
  registerStateRoutes,
  registerAdminRoutes,
  registerHealthRoutes,
  registerMetricsRoutes,
  registerRecoveryRoutes,
  registerAgentRoutes,
  registerGitHubRoutes,
];

export interface ServerOptions {
  /** Extra route modules, for roles that add endpoints (agent API, webhooks). */
  routes?: RouteModule[];
}

const REQUEST_ID_PATTERN = /^[\w.:-]{1,128}$/;
/** Longest path parameter the router matches, in characters. */
const MAX_PARAM_LENGTH = 100;
/** How often a closing server closes the connections that went idle since it began to close. */
const CLOSE_IDLE_EVERY_MS = 100;
/**
 * Maximum time a stopping server keeps its idle keep-alive connections open, so that a request
 * already on its way on one gets a 503 and `Connection: close` rather than a reset. It covers
 * a one-way delay between continents (an estimate: about 150 ms) and the event-loop delay of a
 * server busy with a burst, with margin. It ends early once no connection is open. The
 * listener closes at its start, so a restarted server can bind the port during the window. A
 * stop with idle clients takes up to this much longer, far inside the 10 s that Docker waits
 * by default.
 */
export const DRAIN_WINDOW_MS = 1_000;
/** Node's defaults for how long the headers may take and how often timeouts are checked. */
const DEFAULT_HEADERS_TIMEOUT_MS = 60_000;
const DEFAULT_CHECKING_INTERVAL_MS = 30_000;
const MIN_CHECKING_INTERVAL_MS = 500;
/** Retry-After of a 503 for a locked database, in seconds. */
const BUSY_RETRY_AFTER_S = 5;
/** Maximum number of characters of a request path that an error message repeats. */
const MAX_PATH_IN_MESSAGE = 200;

export async function buildServer(
  context: AppContext,
  options: ServerOptions = {},
): Promise<FastifyInstance> {
  const { api } = context.config;
  const app: FastifyInstance = Fastify({
    loggerInstance: context.logger as FastifyBaseLogger,
    childLoggerFactory: deferredChildLogger,
    logController: new RequestLogController(),
    bodyLimit: api.bodyLimitBytes,
    requestTimeout: api.timeoutSeconds * 1000,
    // A client or proxy may name the request; otherwise it gets a fresh id.
    genReqId: (request) => {
      const given = request.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID_PATTERN.test(given) ? given : randomUUID();
    },
    // Only the configured proxies may name the client (request.ip) with X-Forwarded-For.
    trustProxy: api.trustProxy.length > 0 ? api.trustProxy : false,
    // Fastify's own 503 for requests that arrive while it closes has another body and no
    // request id. The onRequest hook that checks `stopping` sends the catalogue's error instead.
    return503OnClosing: false,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Errors that Fastify or Node's parser raise before routing get the catalogue's shape too.
    frameworkErrors: (error, request, reply) => {
      const apiError =
        error.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new ApiError(
              'validation_failed',
              `a path parameter is longer than the server accepts (${MAX_PARAM_LENGTH} characters)`,
              'path',
              'maxLength',
            )
          : new ApiError(
              'validation_failed',
              `the path is not valid percent-encoding: ${error.message}`,
              'path',
              'encoding',
            );
      void (reply as FastifyReply)
        .code(apiError.status)
        .header('x-request-id', request.id)
        .send(errorBody(apiError, request.id));
    },
    clientErrorHandler: answerClientError,
    // Node would reject an HTTP/1.1 request without Host with a bare 400 of its own, before
    // Fastify receives it. rejectBadHost sends the same status with the catalogue's error instead.
    http: {
      requireHostHeader: false,
      // With its default headersTimeout of 60 s above a shorter requestTimeout, Node sent 408 to a
      // stalled body only after both had passed: 88 s for API_TIMEOUT=2. It also checks
      // timeouts only every connectionsCheckingInterval (30 s by default).
      headersTimeout: Math.min(DEFAULT_HEADERS_TIMEOUT_MS, api.timeoutSeconds * 1000),
      connectionsCheckingInterval: Math.min(
        DEFAULT_CHECKING_INTERVAL_MS,
        Math.max(MIN_CHECKING_INTERVAL_MS, (api.timeoutSeconds * 1000) / 4),
      ),
    },
    // Ajv does not coerce, so a body with `"commit": 1234567` or `"branch": true` is a type
    // error rather than a string. Query values arrive as text, and convertQuery converts them.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
  });
  registerJsonBodyParser(app);
  app.server.on(
    'checkExpectation',
    (request: http.IncomingMessage, response: http.ServerResponse) =>
      rejectUnknownExpectation(app, request, response),
  );
  const methodsOf = recordRouteMethods(app);
  rejectUnknownQueries(app);
  boundRequestNumbers(app);
  app.addHook('preValidation', rejectBadQueryEncoding);
  app.addHook('preValidation', rejectRepeatedQuery);
  app.addHook('preValidation', convertQuery);
  describeRouteRoles(app);
  documentSharedResponses(app, {
    rateLimit: api.rateLimitPerMinute > 0,
    authFailureLimit: api.authFailureLimitPerMinute > 0,
  });

  // A stop first closes the listener and keeps the idle keep-alive connections for the drain
  // window, while every request gets a 503 that closes its connection. The window ends in the
  // last preClose hook, added after the route modules, so that their hooks (which end the
  // long-poll claims and followed logs) run at its start.
  let stopping = false;
  let drained: Promise<void> = Promise.resolve();
  app.addHook('preClose', (done) => {
    stopping = true;
    drained = stopAccepting(app.server, DRAIN_WINDOW_MS);
    done();
  });

  // Node's parser goes on reading a connection whose error response was sent before the body
  // arrived, so a request that the client sent after that body is dropped unanswered.
  const bodyDrains = new BodyDrains();
  app.addHook('onRequest', (request, reply, done) => {
    if (!bodyDrains.isClosing(request.raw)) {
      done();
      return;
    }
    request.log.info('dropped a request sent after a body on a connection that is closing');
    void reply.hijack();
    request.raw.resume();
  });

  // Set before any other hook can reply. Fastify keeps a reply's headers when an error
  // replaces its body, so an onSend hook on every reply is not needed for the header.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
  app.addHook('onRequest', (_request, reply, done) => {
    if (!stopping) {
      done();
      return;
    }
    void reply.header('connection', 'close');
    done(
      new ApiError(
        'service_unavailable',
        'the server is stopping; send the request again once it is back',
        'server',
        'stopping',
      ),
    );
  });
  app.addHook('onRequest', rejectBadHost);

  const optionalBodies = recordOptionalBodies(app);
  await app.register(swagger, {
    // The plugin marks every body schema required. The routes that accept a request without
    // a body are marked optional here.
    transformObject: (documents) =>
      'openapiObject' in documents
        ? markOptionalBodies(documents.openapiObject, optionalBodies)
        : documents.swaggerObject,
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Slipway API',
        version: '1',
        description:
          'Self-hosted CI/CD execution plane. Every error has the shape ' +
          '`{"error", "code", "field", "rule", "request_id"}`; codes: ' +
          Object.entries(ERROR_CODES)
            .map(([code, { status, summary }]) => `\`${code}\` (${status}) ${summary}`)
            .join('; '),
      },
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            description:
              'A token made with `slipway token create`, or, where SLIPWAY_OIDC_AUDIENCE is ' +
              'set, a GitHub Actions OIDC token for that audience, which acts with role trigger ' +
              'but cancels, retries and reads the logs of only the jobs its repository triggered.',
          },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/api/docs' });

  // While writes fail, each lookup of each active token fails to store its use again, once
  // per TOKEN_CACHE_MS, so only the first failure of each code in a window is logged.
  const tokenUseErrors = new RepeatedErrors();
  const verifier = new TokenVerifier(
    context.store.db,
    (tokenId, at) => {
      // Bookkeeping of the token, not a change that a request asked for, so it has no audit row.
      context.store
        .write((trx) => storeTokenUse(trx, tokenId, at))
        .catch((error: unknown) => {
          const code = (error as { code?: unknown } | null)?.code;
          tokenUseErrors.log(
            context.logger,
            'warn',
            typeof code === 'string' ? code : 'no code',
            { err: error, token_id: tokenId },
            'could not store a token use',
          );
        });
    },
    {
      version: () => context.store.dataVersion(),
      isActive: (tokenId) => context.store.read((sqlite) => isTokenActive(sqlite, tokenId)),
    },
    context.config.oidc === undefined
      ? undefined
      : new OidcVerifier(context.config.oidc, { logger: context.logger }),
  );
  let failures: FailureLimit | undefined;
  if (api.authFailureLimitPerMinute > 0) {
    failures = isClusterWorker()
      ? new SharedFailureLimit(api.authFailureLimitPerMinute, context.logger)
      : new AuthFailureLimiter(api.authFailureLimitPerMinute);
  }
  registerAuth(app, verifier, failures);

  if (api.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      global: true,
      // The plugin adds this hook to each route, and route hooks run after the authentication
      // hook of the instance, so the limit is per token and agents can be exempt. Counting before
      // the body is read and validated counts requests that end 400 too.
      hook: 'onRequest',
      max: api.rateLimitPerMinute,
      timeWindow: 60_000,
      keyGenerator: rateLimitKey,
      // Workers long-poll and upload logs continuously; their traffic is not user traffic.
      allowList: (request: FastifyRequest) => request.principal?.role === 'agent',
      // The processes of a cluster share each token's limit through the primary.
      ...(isClusterWorker()
        ? { store: sharedQuotaStore(context.logger) as never, skipOnError: true }
        : {}),
      errorResponseBuilder: (_request, context) => ({
        statusCode: 429,
        code: 'rate_limited',
        message: `rate limit of ${context.max} requests per minute exceeded; retry in ${context.after}`,
      }),
    });
  }

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]!;
    const pathInMessage =
      path.length > MAX_PATH_IN_MESSAGE ? `${path.slice(0, MAX_PATH_IN_MESSAGE)}...` : path;
    const allowed = methodsOf(path);
    if (allowed.length > 0 && request.method === 'OPTIONS') {
      // A client sends OPTIONS to learn which methods the path supports.
      void reply
        .code(204)
        .header('allow', [...allowed, 'OPTIONS'].join(', '))
        .send();
      return;
    }
    if (allowed.length > 0) {
      const error = new ApiError(
        'method_not_allowed',
        `${request.method} is not allowed on ${pathInMessage}; use ${allowed.join(', ')}`,
        'method',
        'allowed',
        { allowed },
      );
      void reply.code(405).header('allow', allowed.join(', ')).send(errorBody(error, request.id));
      return;
    }
    const error = new ApiError(
      'route_not_found',
      `no endpoint ${request.method} ${pathInMessage}; see /api/openapi.json`,
      'path',
      'exists',
    );
    void reply.code(404).send(errorBody(error, request.id));
  });

  const storageErrors = new RepeatedErrors();
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const apiError = toApiError(error, bodyLimitOf(request, api.bodyLimitBytes));
    if (apiError.status >= 500 && error instanceof ApiError) {
      // A 5xx the code chose (GitHub not configured, a recovery that failed) is an expected
      // outcome with its own message, not a bug, so it needs no stack trace.
      request.log.warn({ code: apiError.code, error: apiError.message }, 'request failed');
    } else if (apiError.status >= 500 && apiError.field === 'storage') {
      storageErrors.log(
        request.log,
        'error',
        apiError.rule ?? apiError.code,
        { err: error },
        'request failed',
      );
    } else if (apiError.status >= 500) {
      request.log.error({ err: error }, 'request failed');
    } else if (apiError.code === 'rate_limited') {
      void reply.header('retry-after', reply.getHeader('retry-after') ?? '60');
    }
    if (apiError.rule === 'locked') void reply.header('retry-after', String(BUSY_RETRY_AFTER_S));
    if (!request.raw.complete) bodyDrains.closeAfterBody(request.raw, api.timeoutSeconds * 1000);
    void reply.code(apiError.status).send(errorBody(apiError, request.id));
  });

  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  for (const register of [...ROUTE_MODULES, ...(options.routes ?? [])]) {
    await register(app, context);
  }

  // After this hook, Fastify's close calls server.close(), which waits for every open
  // connection and closes the idle ones. A keep-alive connection whose response was still
  // being made then (a long-poll claim, a followed log) would stay open for its keep-alive
  // timeout of 72 s once it went idle, so such connections are closed as they go idle. A
  // connection that lingers to drop a body after its error response is closed at once.
  // NOTE: preClose hooks of encapsulated plugins run after this one, so after the window.
  app.addHook('preClose', async () => {
    await drained;
    bodyDrains.closeAll();
    const timer = setInterval(() => app.server.closeIdleConnections(), CLOSE_IDLE_EVERY_MS);
    timer.unref();
    app.server.once('close', () => clearInterval(timer));
  });
  return app;
}

/**
 * Rejects with 400, as HTTP/1.1 requires, an HTTP/1.1 request that has no Host header or more
 * than one. HTTP/1.0 requests need no Host header. The response closes the connection, as the
 * response of Node's own check does.
 */
function rejectBadHost(
  request: FastifyRequest,
  reply: FastifyReply,
  done: (error?: Error) => void,
): void {
  if (request.raw.httpVersion !== '1.1') {
    done();
    return;
  }
  const count = headerCount(request, 'host');
  if (count === 1) {
    done();
    return;
  }
  void reply.header('connection', 'close');
  done(
    count === 0
      ? new ApiError(
          'validation_failed',
          'the request has no Host header, which HTTP/1.1 requires; send Host: <host>:<port>',
          'Host',
          'required',
        )
      : new ApiError(
          'validation_failed',
          `the request has ${count} Host headers; HTTP/1.1 allows one, so send one`,
          'Host',
          'single',
        ),
  );
}

/**
 * Writes the error response for a request that Node's HTTP parser rejected before Fastify
 * saw it: headers too large, a request that did not arrive in time, an unknown method, or
 * bytes that are not HTTP. The response has the catalogue's shape and a request id of its
 * own. As in Node's own handler, it goes to the socket, which is then closed. Fastify binds
 * `this` to the instance.
 */
function answerClientError(
  this: FastifyInstance,
  error: NodeJS.ErrnoException,
  socket: Duplex,
): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const pending = pendingResponse(socket);
  if (pending !== undefined) {
    // The bad bytes follow a whole request that is still being handled and may commit a
    // change, such as the rest of a body longer than its Content-Length. Its response is sent
    // first, then this error, so the client does not read a 400 for a request that succeeded.
    // Another request may be pending behind this one, so each finish checks again.
    if (!deferredClientErrors.has(socket)) {
      deferredClientErrors.add(socket);
      pending.once('finish', () => {
        deferredClientErrors.delete(socket);
        answerClientError.call(this, error, socket);
      });
    }
    return;
  }
  const apiError = clientApiError(error);
  const requestId = randomUUID();
  this.log.info(
    { reqId: requestId, code: error.code, status: apiError.status },
    `rejected a request before routing: ${error.message}`,
  );
  if (!socket.writable) {
    socket.destroy(error);
    return;
  }
  const body = JSON.stringify(errorBody(apiError, requestId));
  socket.write(
    `HTTP/1.1 ${apiError.status} ${http.STATUS_CODES[apiError.status]}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-Request-Id: ${requestId}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
  );
  socket.destroy(error);
}

/**
 * Rejects a request whose Expect header names an expectation other than 100-continue, before
 * Fastify routes it. Without a `checkExpectation` listener, Node sends a bare 417 with no body.
 */
function rejectUnknownExpectation(
  app: FastifyInstance,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): void {
  const expect = request.headers.expect ?? '';
  const apiError = new ApiError(
    'expectation_failed',
    `the server does not support Expect ${JSON.stringify(expect)}; send no Expect header, or Expect: 100-continue`,
    'Expect',
    '100-continue',
  );
  const requestId = randomUUID();
  app.log.info(
    { reqId: requestId, expect, status: apiError.status },
    'rejected a request with an unknown Expect header',
  );
  const body = JSON.stringify(errorBody(apiError, requestId));
  response.writeHead(apiError.status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'X-Request-Id': requestId,
  });
  response.end(body);
}

/** Sockets whose client error waits for the response to the request before the bad bytes. */
const deferredClientErrors = new WeakSet<Duplex>();

/**
 * Returns the response still being written for a request that arrived whole on the socket. A
 * request whose own body is bad is not whole, so it gets only the error response.
 */
function pendingResponse(socket: Duplex): http.ServerResponse | undefined {
  const response = socketResponse(socket);
  if (response === undefined || response.writableFinished) return undefined;
  return response.req.complete ? response : undefined;
}

/**
 * A request line: a method token, a target and an HTTP version. Node's parser also reports
 * bytes that are no request line at all, such as a TLS handshake, as an invalid method, and
 * those get 400.
 */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [!-~]+ HTTP\/\d\.\d\r?\n/;

function clientApiError(error: NodeJS.ErrnoException): ApiError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError(
        'headers_too_large',
        'the request headers are larger than the server accepts (16 KiB)',
        'headers',
        'maxBytes',
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError(
        'request_timeout',
        'the request did not arrive completely in time (API_TIMEOUT)',
        'request',
        'timeout',
      );
    case 'HPE_INVALID_METHOD':
      if (!REQUEST_LINE.test(parsedBytes(error))) return notHttp(error);
      // RFC 9110 section 9.1: an origin server should respond to an unrecognized method with 501.
      return new ApiError(
        'method_not_implemented',
        'the server does not recognize the request method; the API uses GET, POST and PATCH, and OPTIONS on a path lists its methods',
        'method',
        'known',
      );
    default:
      return notHttp(error);
  }
}

/**
 * Returns the chunk Node's parser was reading, which Node adds to the error as `rawPacket`.
 * A request line split over several chunks therefore gets 400 instead of 501.
 */
function parsedBytes(error: NodeJS.ErrnoException): string {
  const raw = (error as { rawPacket?: unknown }).rawPacket;
  return Buffer.isBuffer(raw) ? raw.toString('latin1') : '';
}

/** The part of a request that Node's HTTP parser names in its error codes. */
const PARSE_ERROR_FIELDS: Record<string, string | undefined> = {
  HPE_INVALID_HEADER_TOKEN: 'headers',
  HPE_INVALID_CONTENT_LENGTH: 'Content-Length',
  HPE_UNEXPECTED_CONTENT_LENGTH: 'Content-Length',
  HPE_INVALID_TRANSFER_ENCODING: 'Transfer-Encoding',
  HPE_INVALID_CHUNK_SIZE: 'body',
  HPE_INVALID_URL: 'path',
};

/**
 * Describes bytes that Node's parser rejected, with the parser's reason (llhttp's, such as
 * "Invalid header value char") and the part of the request that its error code names.
 */
function notHttp(error: NodeJS.ErrnoException): ApiError {
  const reason = (error as { reason?: unknown }).reason;
  const field = PARSE_ERROR_FIELDS[error.code ?? ''] ?? 'request';
  const message =
    typeof reason === 'string' && reason !== ''
      ? `the request is not valid HTTP: ${reason}`
      : 'the request is not valid HTTP';
  return new ApiError('validation_failed', message, field, 'http');
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Reason for a route's own `bodyLimit`, which a 413 message names. Without it the route
     * uses API_BODY_LIMIT.
     */
    bodyLimitSource?: string;
  }
}

/** A route's largest request body, and the setting or reason that sets it. */
export interface BodyLimit {
  bytes: number;
  source: string;
}

/** Returns the body limit of the request's route: its own one, else API_BODY_LIMIT. */
function bodyLimitOf(request: FastifyRequest, apiBodyLimitBytes: number): BodyLimit {
  const own = request.routeOptions.config?.bodyLimitSource;
  const bytes = request.routeOptions.bodyLimit;
  if (own === undefined || bytes === undefined) {
    return { bytes: apiBodyLimitBytes, source: 'API_BODY_LIMIT' };
  }
  return { bytes, source: own };
}

/** Maps anything thrown while handling a request to the error catalogue. */
/**
 * Returns the key that the rate limit counts a request under: its token, or its source
 * address when it has none. A token the server does not know (or has revoked) names no client,
 * so its requests count against the address too. Otherwise each invented token would open a
 * new budget on the public endpoints. Addresses count as the failed-authentication limit
 * counts them, IPv6 ones by their /64.
 */
export function rateLimitKey(request: FastifyRequest): string {
  const token = bearerToken(request);
  if (token === undefined || request.principal === undefined) {
    return `ip:${addressKey(clientAddress(request))}`;
  }
  // Each workflow run gets a new OIDC token, so its repository is what names the client.
  const oidc = request.principal.oidc;
  return oidc === undefined ? `token:${hashToken(token)}` : `oidc:${oidc.repository.toLowerCase()}`;
}

export function toApiError(
  error: FastifyError | ApiError | Error,
  bodyLimit?: BodyLimit,
): ApiError {
  if (error instanceof ApiError) return error;
  const fastifyError = error as FastifyError;
  if (fastifyError.validation !== undefined && fastifyError.validation.length > 0) {
    return validationError(fastifyError);
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(
        'body_too_large',
        bodyLimit === undefined
          ? 'the body is too large'
          : `the body is larger than the limit of ${bodyLimit.bytes} bytes (${bodyLimit.source})`,
        'body',
        'maxBytes',
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(
        'unsupported_media_type',
        `unsupported content type; send "Content-Type: application/json"`,
        'Content-Type',
        'application/json',
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError(
        'invalid_json',
        'the body is empty but Content-Type is application/json',
        'body',
        'json',
      );
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError(
        'invalid_json',
        `the body is not valid JSON: ${fastifyError.message}`,
        'body',
        'json',
      );
    case 'rate_limited':
      return new ApiError('rate_limited', fastifyError.message, 'Authorization', 'rate');
  }
  if (fastifyError.statusCode === 429) {
    return new ApiError('rate_limited', fastifyError.message, 'Authorization', 'rate');
  }
  if (error instanceof SyntaxError && fastifyError.statusCode === 400) {
    return new ApiError(
      'invalid_json',
      `the body is not valid JSON: ${error.message}`,
      'body',
      'json',
    );
  }
  if (isBusyError(error)) {
    // Another process held the write lock for all of busy_timeout: nothing was written, and
    // the same request can succeed once the lock is free.
    return new ApiError(
      'service_unavailable',
      'the database is locked by another process (SQLITE_BUSY), so nothing was changed; ' +
        'retry the request in a few seconds',
      'database',
      'locked',
    );
  }
  const storage = storageError(error);
  if (storage !== undefined) return storage;
  if (fastifyError.statusCode === 503 || fastifyError.code === 'FST_ERR_REQUEST_TIMEOUT') {
    return new ApiError('service_unavailable', fastifyError.message);
  }
  if (fastifyError.statusCode !== undefined && fastifyError.statusCode < 500) {
    return new ApiError('validation_failed', fastifyError.message);
  }
  return new ApiError('internal_error', 'internal error; the request id is in the server log');
}

/**
 * Maps a failed write of the database or a task log, which the operator must fix on the host,
 * to a 503 that names the cause. The message leaves out the path, which the server log has.
 */
function storageError(error: unknown): ApiError | undefined {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return undefined;
  const primary = code.startsWith('SQLITE_') ? code.split('_').slice(0, 2).join('_') : code;
  switch (primary) {
    case 'SQLITE_FULL':
    case 'ENOSPC':
    case 'EDQUOT':
      return new ApiError(
        'service_unavailable',
        `the server's disk is full (${code}), so the request failed; ` +
          'free space where the database and logs are stored (SLIPWAY_DATA_DIR), then retry',
        'storage',
        'full',
      );
    case 'SQLITE_READONLY':
    case 'SQLITE_PERM':
    case 'EROFS':
    case 'EACCES':
    case 'EPERM':
      return new ApiError(
        'service_unavailable',
        `the server may not read or write its data files (${code}), so the request failed; ` +
          'the server log names the file, whose permissions or file system need fixing',
        'storage',
        'permission',
      );
    case 'SLIPWAY_DATABASE_REPLACED':
      return new ApiError(
        'service_unavailable',
        'the database file was deleted or replaced while the server ran, so writes are ' +
          'rejected to keep them from being lost; the server log names the file and what to do',
        'storage',
        'replaced',
      );
    // SQLITE_CANTOPEN: the read connection opens on first use, which fails when the file is gone.
    case 'SQLITE_IOERR':
    case 'SQLITE_CANTOPEN':
    case 'EIO':
      return new ApiError(
        'service_unavailable',
        `the server's storage failed (${code}), so the request failed; ` +
          'the server log has the error, and the disk needs checking',
        'storage',
        'io',
      );
  }
  return undefined;
}

interface AjvIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

function validationError(error: FastifyError): ApiError {
  const issue = error.validation![0] as unknown as AjvIssue;
  const where = error.validationContext ?? 'body';
  const path = issue.instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
  let rule = issue.keyword;
  let message = describeIssue(issue);
  if (issue.keyword === 'required') {
    path.push(String(issue.params.missingProperty));
    message = 'is required';
  } else if (issue.keyword === 'const') {
    // A union of literals fails with one `const` issue per member: list them all.
    const allowed = error
      .validation!.map((other) => other as unknown as AjvIssue)
      .filter((other) => other.keyword === 'const' && other.instancePath === issue.instancePath)
      .map((other) => String(other.params.allowedValue));
    rule = 'enum';
    message = `must be one of ${allowed.join(', ')}`;
  } else if (issue.keyword === 'type' && path.length === 0 && where === 'body') {
    message = `must be a JSON ${String(issue.params.type)}`;
  } else if (issue.keyword === 'additionalProperties') {
    const name = String(issue.params.additionalProperty);
    if (name === '' && where === 'querystring') {
      return new ApiError(
        'validation_failed',
        'the query has a parameter with an empty name, as in "?=x"; remove it',
        'query',
        'unknown_field',
      );
    }
    path.push(name);
    rule = 'unknown_field';
    message = 'is not a known field';
  }
  const field = path.length > 0 ? path.join('.') : where;
  // A value that matches no member of a union fails once per member and then as `anyOf`.
  // The first member's complaint alone ("must be string") would hide the others.
  const union =
    issue.keyword !== 'const' &&
    error.validation!.some(
      (other) =>
        (other as unknown as AjvIssue).keyword === 'anyOf' &&
        (other as unknown as AjvIssue).instancePath === issue.instancePath,
    );
  // A value of the right type for one member that breaks that member's limit (a string over
  // maxLength in a union of string and number) gets that limit as its message and rule.
  const broken =
    union && RUN_FIELD_MESSAGES[field] === undefined
      ? constraintIssues(error, issue.instancePath)
      : [];
  if (broken.length === 1) rule = broken[0]!.keyword;
  if (issue.keyword === 'pattern' && issue.params.pattern === PRINTABLE_TEXT_PATTERN) {
    rule = 'printable';
  }
  const description =
    broken.length === 1
      ? describeIssue(broken[0]!)
      : union
        ? describeUnion(field, error, issue.instancePath)
        : issue.keyword === 'pattern'
          ? describePattern(field, String(issue.params.pattern), where)
          : undefined;
  // A name with spaces or other odd characters would blur into the words around it.
  const shownField = /^[\w.[\]-]+$/.test(field) ? field : JSON.stringify(field);
  return new ApiError(
    'validation_failed',
    `${WHERE_NAMES[where] ?? ''}${shownField} ${description ?? message}`.trim(),
    field,
    rule,
  );
}

/** Words before a field's name in a message, by where Fastify found the field. */
const WHERE_NAMES: Record<string, string> = {
  params: 'path parameter ',
  querystring: 'query parameter ',
  headers: 'header ',
};

/** Messages of the fields whose union of string and integer gets one message of its own. */
const RUN_FIELD_MESSAGES: Record<string, string | undefined> = {
  github_run_id: 'must be a run id: digits, as a string or an integer',
  github_run_attempt: 'must be an attempt number of 1 or more, as a string of digits or an integer',
};

/** Returns the issues of a union's members other than a wrong type or literal. */
function constraintIssues(error: FastifyError, instancePath: string): AjvIssue[] {
  return error
    .validation!.map((other) => other as unknown as AjvIssue)
    .filter(
      (other) =>
        other.instancePath === instancePath && !['anyOf', 'type', 'const'].includes(other.keyword),
    );
}

function describeUnion(field: string, error: FastifyError, instancePath: string): string {
  const runFieldMessage = RUN_FIELD_MESSAGES[field];
  if (runFieldMessage !== undefined) return runFieldMessage;
  const issues = error
    .validation!.map((other) => other as unknown as AjvIssue)
    .filter((other) => other.instancePath === instancePath && other.keyword !== 'anyOf');
  // A union of literals fails once per literal: one complaint lists them all.
  const literals = issues
    .filter((other) => other.keyword === 'const')
    .map((other) => String(other.params.allowedValue));
  const complaints = issues.filter((other) => other.keyword !== 'const').map(describeIssue);
  if (literals.length > 0) complaints.push(`must be one of ${literals.join(', ')}`);
  return [...new Set(complaints)].join(', or ');
}

const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

/** Says in plain words what an Ajv issue requires, in place of Ajv's own wording. */
function describeIssue(issue: AjvIssue): string {
  const limit = issue.params.limit;
  switch (issue.keyword) {
    case 'type': {
      const types = String(issue.params.type).split(',');
      return `must be ${types.map((type) => TYPE_NAMES[type] ?? type).join(' or ')}`;
    }
    case 'minLength':
      return limit === 1 ? 'must not be empty' : `must have at least ${String(limit)} characters`;
    case 'maxLength':
      return `must have at most ${String(limit)} characters`;
    case 'minimum':
      return `must be at least ${String(limit)}`;
    case 'maximum':
      return `must be at most ${String(limit)}`;
    case 'exclusiveMinimum':
      return `must be more than ${String(limit)}`;
    case 'exclusiveMaximum':
      return `must be less than ${String(limit)}`;
    case 'minItems':
      return `must have at least ${String(limit)} ${limit === 1 ? 'item' : 'items'}`;
    case 'maxItems':
      return `must have at most ${String(limit)} ${limit === 1 ? 'item' : 'items'}`;
    case 'pattern':
      return `must match the pattern ${String(issue.params.pattern)}`;
    case 'maxProperties':
      return `must have at most ${String(limit)} fields`;
    case 'uniqueItems':
      return 'must not repeat an item';
    case 'format':
      return issue.params.format === 'date-time'
        ? 'must be a date and time such as 2026-01-02T03:04:05Z (in a query, send a + offset as %2B)'
        : `must be a valid ${String(issue.params.format)}`;
    default:
      return issue.message ?? 'is invalid';
  }
}

/** Words for the patterns of the API's schemas, so that a message need not show the pattern. */
const PATTERN_WORDS = new Map<string, string>([
  ['^[0-9]{1,20}$', 'must be 1 to 20 decimal digits'],
  ['^[0-9]{1,18}$', 'must be the next_cursor value of the previous page'],
  ['^0*[1-9][0-9]{0,5}$', 'must be a whole number from 1 to 999999'],
  ['^[\\x21-\\x7e]+$', 'must be printable ASCII characters without spaces'],
  [
    '^[a-z][a-z0-9-]{0,62}$',
    'must be a lower-case letter followed by up to 62 lower-case letters, digits or dashes',
  ],
  [
    '^[a-z][a-z0-9_-]{0,62}$',
    'must be a lower-case letter followed by up to 62 lower-case letters, digits, underscores or dashes',
  ],
  [
    '^[a-z][a-z0-9_.-]{0,62}$',
    'must be a lower-case letter followed by up to 62 lower-case letters, digits, underscores, dots or dashes',
  ],
  ['^[a-z_.]{1,64}$', 'must be 1 to 64 lower-case letters, underscores or dots'],
  [
    HOSTNAME_PATTERN,
    'must not contain control characters (C0, DEL and C1) or line or paragraph separators (U+2028, U+2029)',
  ],
  [
    PRINTABLE_TEXT_PATTERN,
    'must not contain a control character other than tab (such as a line break, carriage return, escape or NUL) or a line or paragraph separator (U+2028, U+2029)',
  ],
  [
    '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$',
    'must be a letter or digit followed by up to 99 letters, digits, underscores, dots, @ or dashes',
  ],
  [
    '^[a-z][a-z0-9-]{0,62}-[0-9a-f]{8}\\.[0-9]+\\.[0-9]+$',
    'must look like <job id>.<attempt>.<index>, e.g. ci-a1b2c3d4.1.0',
  ],
]);

function describePattern(field: string, pattern: string, where: string): string | undefined {
  const hex = /^\^\[0-9a-fA-F\]\{(\d+),(\d+)\}\$$/.exec(pattern);
  if (field === 'commit' && hex !== null) {
    // A trigger names a whole SHA; a query filter takes a prefix as well.
    const subject = where === 'querystring' ? 'a hex commit SHA or its prefix' : 'a hex commit SHA';
    return `must be ${subject} of ${hex[1]} to ${hex[2]} characters`;
  }
  if (field === 'job_id') return 'must look like <type>-<8 hex digits>, e.g. ci-a1b2c3d4';
  return PATTERN_WORDS.get(pattern);
}
