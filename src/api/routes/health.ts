/**
 * `GET /api/health/status`: public, so a Docker HEALTHCHECK or an uptime monitor can use it.
 * The database is checked on every request; other components report their latest recorded
 * result from `health_metrics`.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { AppContext } from '../../app/context.js';
import { parseJsonColumn } from '../../store/json.js';

export const HEALTH_STATES = ['healthy', 'degraded', 'unhealthy'] as const;
export type HealthState = (typeof HEALTH_STATES)[number];

const HealthStateSchema = Type.Union(HEALTH_STATES.map((state) => Type.Literal(state)));

const ComponentSchema = Type.Object({
  status: HealthStateSchema,
  latency_ms: Type.Union([Type.Number(), Type.Null()]),
  checked_at: Type.String(),
  age_seconds: Type.Number(),
  details: Type.Unknown(),
});

const HealthReply = Type.Object({
  status: HealthStateSchema,
  checked_at: Type.String(),
  components: Type.Record(Type.String(), ComponentSchema),
});

export function worstOf(states: Iterable<HealthState>): HealthState {
  let worst: HealthState = 'healthy';
  for (const state of states) {
    if (HEALTH_STATES.indexOf(state) > HEALTH_STATES.indexOf(worst)) worst = state;
  }
  return worst;
}

export function registerHealthRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/health/status',
    {
      schema: {
        tags: ['health'],
        summary: 'Overall and per-component health; 503 when unhealthy',
        response: { 200: HealthReply, 503: HealthReply },
      },
    },
    async (_request, reply) => {
      const now = new Date();
      const components: Record<string, ComponentHealth> = {};
      components.api = {
        status: 'healthy',
        latency_ms: 0,
        checked_at: now.toISOString(),
        age_seconds: 0,
        details: { pid: process.pid, uptime_seconds: Math.round(process.uptime()) },
      };
      components.database = await checkDatabase(context, now);
      for (const row of await latestMetrics(context)) {
        if (row.component === 'database' || row.component === 'api') continue;
        components[row.component] = {
          status: row.status,
          latency_ms: row.latency_ms,
          checked_at: row.recorded_at,
          age_seconds: Math.max(
            0,
            Math.round((now.getTime() - Date.parse(row.recorded_at)) / 1000),
          ),
          details: parseJsonColumn<unknown>(row.details, {}),
        };
      }
      const status = worstOf(Object.values(components).map((component) => component.status));
      reply.code(status === 'unhealthy' ? 503 : 200);
      return { status, checked_at: now.toISOString(), components };
    },
  );
}

interface ComponentHealth {
  status: HealthState;
  latency_ms: number | null;
  checked_at: string;
  age_seconds: number;
  details: unknown;
}

async function checkDatabase(context: AppContext, now: Date): Promise<ComponentHealth> {
  const started = performance.now();
  try {
    await sql`select 1`.execute(context.store.db);
    return {
      status: 'healthy',
      latency_ms: Math.round((performance.now() - started) * 100) / 100,
      checked_at: now.toISOString(),
      age_seconds: 0,
      details: { path: context.store.path },
    };
  } catch (error) {
    return {
      status: 'unhealthy',
      latency_ms: null,
      checked_at: now.toISOString(),
      age_seconds: 0,
      details: { error: error instanceof Error ? error.message : String(error) },
    };
  }
}

async function latestMetrics(context: AppContext) {
  return context.store.db
    .selectFrom('health_metrics as m')
    .selectAll('m')
    .where('m.id', 'in', (eb) =>
      eb
        .selectFrom('health_metrics')
        .select((e) => e.fn.max('id').as('id'))
        .groupBy('component'),
    )
    .execute();
}
