/**
 * `GET /api/health/status` (public, so a Docker HEALTHCHECK or an uptime monitor can use it)
 * and `GET /api/health/history` (role read).
 *
 * The status always has `api` and `database`, checked on every request through the API's own
 * connection. The latest result of a health check named `database` takes the place of the
 * live `database` result unless the live probe fails, but with the live WAL size. The other
 * components are the latest result of each check in the pipeline file, plus the recent
 * results of checks that only another process's pipeline file names. A check's result older
 * than three intervals counts as at least degraded, because nothing is checking it any more.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { AppContext } from '../../app/context.js';
import { latestMetrics } from '../../health/metrics.js';
import { checkIntervalMs } from '../../health/runner.js';
import { HEALTH_STATES, worstOf, type HealthState } from '../../health/types.js';
import { WAL_DEGRADED_BYTES, walHealth } from '../../health/wal.js';
import { parseJsonColumn } from '../../store/json.js';
import { ApiError } from '../errors.js';
import { parseQueryTime } from '../query.js';
import { ErrorSchema } from '../schemas.js';

export { HEALTH_STATES, worstOf, type HealthState };

const DAY_MS = 86_400_000;

const HealthStateSchema = Type.Union(HEALTH_STATES.map((state) => Type.Literal(state)));

const ComponentSchema = Type.Object({
  status: HealthStateSchema,
  latency_ms: Type.Union([Type.Number(), Type.Null()]),
  checked_at: Type.String(),
  age_seconds: Type.Number(),
  details: Type.Unknown({
    description:
      'what the check found (database path, process id, worker names and hosts); null unless the request has a valid token of any role',
  }),
});

/**
 * ErrorSchema without its $id, which would turn it into a $ref inside a union, and the
 * Markdown reference does not follow references.
 */
const { $id: _errorId, ...InlineError } = ErrorSchema;

const HealthReply = Type.Object({
  status: HealthStateSchema,
  checked_at: Type.String(),
  components: Type.Record(Type.String(), ComponentSchema),
});

const HistoryQuery = Type.Object(
  {
    component: Type.Optional(
      Type.String({ pattern: '^[a-z][a-z0-9_.-]{0,62}$', description: 'a health check name' }),
    ),
    since: Type.Optional(
      Type.String({ format: 'date-time', description: 'start of the range; default 24 h ago' }),
    ),
    until: Type.Optional(
      Type.String({ format: 'date-time', description: 'end of the range; default now' }),
    ),
    limit: Type.Integer({ minimum: 1, maximum: 5000, default: 500 }),
    cursor: Type.Optional(
      Type.String({ pattern: '^[0-9]{1,18}$', description: 'next_cursor of the previous page' }),
    ),
  },
  { additionalProperties: false },
);

const HistoryEntry = Type.Object({
  id: Type.Integer(),
  component: Type.String(),
  status: HealthStateSchema,
  latency_ms: Type.Union([Type.Number(), Type.Null()]),
  checked_at: Type.String(),
  details: Type.Unknown(),
});

const HistoryReply = Type.Object({
  component: Type.Union([Type.String(), Type.Null()]),
  since: Type.String(),
  until: Type.String(),
  results: Type.Array(HistoryEntry),
  count: Type.Integer(),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
  summary: Type.Object({
    total: Type.Integer(),
    healthy: Type.Integer(),
    degraded: Type.Integer(),
    unhealthy: Type.Integer(),
    latency_ms: Type.Object({
      avg: Type.Union([Type.Number(), Type.Null()]),
      max: Type.Union([Type.Number(), Type.Null()]),
    }),
  }),
});

interface ComponentHealth {
  status: HealthState;
  latency_ms: number | null;
  checked_at: string;
  age_seconds: number;
  details: unknown;
}

export function registerHealthRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/health/status',
    {
      schema: {
        tags: ['health'],
        summary: 'Overall and per-component health; 200 healthy or degraded, 503 unhealthy',
        // Monitors may add a parameter of their own, such as a cache buster, which is ignored.
        querystring: Type.Object(
          {},
          { additionalProperties: true, description: 'any parameter, ignored' },
        ),
        response: {
          200: HealthReply,
          // While the server stops, the 503 has the error shape. HealthReply alone cannot
          // serialise that body, and Fastify would send a 500 in its place.
          503: Type.Union([HealthReply, InlineError], {
            description:
              'unhealthy: the same body as for 200; or an error, such as the server stopping',
          }),
        },
      },
    },
    async (request, reply) => {
      const now = new Date();
      const live = await checkConnection(context, now);
      const components: Record<string, ComponentHealth> = {
        api: live.api,
        ...(await latestResults(context, now)),
      };
      components.database = mergeDatabase(live.database, components.database);
      const status = worstOf(Object.values(components).map((component) => component.status));
      // Monitors need no token for the statuses, but the details name files, processes and
      // hosts, which only token holders may see.
      if (request.principal === undefined) {
        for (const component of Object.values(components)) component.details = null;
      }
      reply.code(status === 'unhealthy' ? 503 : 200);
      return { status, checked_at: now.toISOString(), components };
    },
  );

  app.get(
    '/api/health/history',
    {
      schema: {
        tags: ['health'],
        summary: 'Recorded health results over a time range, newest first, with a summary',
        security: [{ bearerAuth: [] }],
        querystring: HistoryQuery,
        response: { 200: HistoryReply, 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async (request) => {
      const query = request.query as {
        component?: string;
        since?: string;
        until?: string;
        limit: number;
        cursor?: string;
      };
      const until = query.until === undefined ? new Date() : parseQueryTime(query.until, 'until');
      const since =
        query.since === undefined
          ? new Date(until.getTime() - DAY_MS)
          : parseQueryTime(query.since, 'since');
      if (since.getTime() > until.getTime()) {
        throw new ApiError(
          'validation_failed',
          `until (${until.toISOString()}) is before since (${since.toISOString()}); give a range whose end is after its start`,
          'until',
          'after_since',
        );
      }
      return readHistory(context, {
        component: query.component,
        since: since.toISOString(),
        until: until.toISOString(),
        limit: query.limit,
        beforeId: query.cursor === undefined ? undefined : Number(query.cursor),
      });
    },
  );
}

/**
 * Returns the WAL limit of the check named `database` in the pipeline file, or the default.
 * The live probe joins that check's result, so both must judge the WAL by one limit.
 */
function walWarnBytes(context: AppContext): number {
  for (const check of context.pipelines.healthChecks) {
    if (check.name === 'database' && check.type === 'database') return check.settings.walWarnBytes;
  }
  return WAL_DEGRADED_BYTES;
}

/** Runs `select 1` on the API's connection: the `api` and `database` components. */
async function checkConnection(
  context: AppContext,
  now: Date,
): Promise<{ api: ComponentHealth; database: ComponentHealth }> {
  const started = performance.now();
  const base = { checked_at: now.toISOString(), age_seconds: 0 };
  const processDetails = { pid: process.pid, uptime_seconds: Math.round(process.uptime()) };
  try {
    await sql`select 1`.execute(context.store.db);
    const latency = Math.round((performance.now() - started) * 100) / 100;
    // Reads still work when the disk is full or the file was replaced, so only the last failed
    // write shows that writes do not.
    const failure = context.store.lastWriteFailure;
    const wal = walHealth(context.store.walUse(), walWarnBytes(context));
    return {
      api: {
        ...base,
        status: 'healthy',
        latency_ms: 0,
        details: { ...processDetails, database: context.store.path },
      },
      database: {
        ...base,
        status: failure === undefined ? wal.status : 'unhealthy',
        latency_ms: latency,
        details:
          failure === undefined
            ? { path: context.store.path, ...wal.details }
            : {
                path: context.store.path,
                ...wal.details,
                reason:
                  `the API's writes failed at ${failure.at}` +
                  `${failure.code === undefined ? '' : ` (${failure.code})`}: ${failure.message}; ` +
                  'writes fail until the cause is fixed, and the next commit without such a failure clears this',
                last_write_failure: failure,
              },
      },
    };
  } catch (error) {
    const reason = `the API cannot query its database: ${(error as Error).message}`;
    return {
      api: {
        ...base,
        status: 'unhealthy',
        latency_ms: null,
        details: { ...processDetails, reason },
      },
      database: {
        ...base,
        status: 'unhealthy',
        latency_ms: null,
        details: { path: context.store.path, reason },
      },
    };
  }
}

/**
 * Combines the live probe with the latest result of a check named `database`, if any. The
 * recorded result has the richer details, so it is shown unless the live probe fails. The WAL
 * size is read on every request, so the live reading replaces the recorded one, and a WAL too
 * large makes the component at least degraded before the next check runs.
 */
function mergeDatabase(
  live: ComponentHealth,
  recorded: ComponentHealth | undefined,
): ComponentHealth {
  if (recorded === undefined) return live;
  const liveDetails = live.details as Record<string, unknown>;
  const recordedDetails = recorded.details as Record<string, unknown>;
  if (live.status === 'unhealthy') {
    return {
      ...recorded,
      status: 'unhealthy',
      details: { ...recordedDetails, ...liveDetails },
    };
  }
  const details = { ...recordedDetails };
  if (liveDetails.wal !== undefined) details.wal = liveDetails.wal;
  if (live.status === 'healthy') return { ...recorded, details };
  const reasons = [recordedDetails.reason, liveDetails.reason].filter(
    (reason) => typeof reason === 'string' && reason !== '',
  );
  return {
    ...recorded,
    status: worstOf([recorded.status, live.status]),
    details: { ...details, reason: reasons.join('; ') },
  };
}

async function latestResults(
  context: AppContext,
  now: Date,
): Promise<Record<string, ComponentHealth>> {
  const checks = new Map(context.pipelines.healthChecks.map((check) => [check.name, check]));
  const defaultIntervalMs = context.config.intervals.healthCheckSeconds * 1000;
  const components: Record<string, ComponentHealth> = {};
  for (const row of await latestMetrics(context.store.db)) {
    const check = checks.get(row.component);
    const ageMs = Math.max(0, now.getTime() - Date.parse(row.recorded_at));
    const staleAfterMs =
      check === undefined
        ? 3 * defaultIntervalMs
        : 3 * checkIntervalMs(context, check) + check.timeoutMs;
    // A check that is in no pipeline file any more stops showing once its result is stale.
    if (check === undefined && ageMs > staleAfterMs) continue;
    const details = parseJsonColumn<Record<string, unknown>>(row.details, {});
    let status = row.status;
    if (ageMs > staleAfterMs) {
      status = worstOf([status, 'degraded']);
      details.stale = true;
      details.stale_reason = `no result for ${Math.round(ageMs / 1000)}s, more than 3 intervals; is the health monitor running?`;
    }
    components[row.component] = {
      status,
      latency_ms: row.latency_ms,
      checked_at: row.recorded_at,
      age_seconds: Math.round(ageMs / 1000),
      details,
    };
  }
  return components;
}

interface HistoryRange {
  component: string | undefined;
  since: string;
  until: string;
  limit: number;
  beforeId: number | undefined;
}

async function readHistory(context: AppContext, range: HistoryRange) {
  const db = context.store.db;
  let base = db
    .selectFrom('health_metrics')
    .where('recorded_at', '>=', range.since)
    .where('recorded_at', '<=', range.until);
  if (range.component !== undefined) base = base.where('component', '=', range.component);

  let page = base.selectAll();
  if (range.beforeId !== undefined) page = page.where('id', '<', range.beforeId);
  const rows = await page
    .orderBy('id', 'desc')
    .limit(range.limit + 1)
    .execute();
  const summary = await base
    .select((eb) => [
      eb.fn.countAll<number>().as('total'),
      sql<number>`sum(status = 'healthy')`.as('healthy'),
      sql<number>`sum(status = 'degraded')`.as('degraded'),
      sql<number>`sum(status = 'unhealthy')`.as('unhealthy'),
      eb.fn.avg<number>('latency_ms').as('avg_latency'),
      eb.fn.max('latency_ms').as('max_latency'),
    ])
    .executeTakeFirstOrThrow();

  const results = rows.slice(0, range.limit);
  return {
    component: range.component ?? null,
    since: range.since,
    until: range.until,
    results: results.map((row) => ({
      id: row.id,
      component: row.component,
      status: row.status,
      latency_ms: row.latency_ms,
      checked_at: row.recorded_at,
      details: parseJsonColumn<unknown>(row.details, {}),
    })),
    count: results.length,
    next_cursor: rows.length > range.limit ? String(results.at(-1)!.id) : null,
    summary: {
      total: Number(summary.total),
      healthy: Number(summary.healthy ?? 0),
      degraded: Number(summary.degraded ?? 0),
      unhealthy: Number(summary.unhealthy ?? 0),
      latency_ms: {
        avg:
          summary.avg_latency === null ? null : Math.round(Number(summary.avg_latency) * 100) / 100,
        max: summary.max_latency === null ? null : Number(summary.max_latency),
      },
    },
  };
}
