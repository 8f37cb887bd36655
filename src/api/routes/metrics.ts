/** Prometheus metrics at `/metrics`: process metrics, request durations and job counts. */
import type { FastifyInstance } from 'fastify';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AppContext } from '../../app/context.js';
import { registerHealthGauges } from '../../health/prometheus.js';
import { STATUSES } from '../../jobs/status.js';
import { readQueueSummary } from '../../health/checks/queue.js';
import { countJobsByStatus } from '../../store/jobs.js';
import { ErrorSchema } from '../schemas.js';

export function registerMetricsRoutes(app: FastifyInstance, context: AppContext): void {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'slipway_' });

  const requestDuration = new Histogram({
    name: 'slipway_http_request_duration_seconds',
    help: 'HTTP request durations by route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });

  new Gauge({
    name: 'slipway_jobs',
    help: 'Jobs in the store by status',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const counts = await countJobsByStatus(context.store.db);
      for (const status of STATUSES) this.set({ status }, counts[status] ?? 0);
    },
  });

  const queueSummary = () => context.store.read((sqlite) => readQueueSummary(sqlite));
  new Gauge({
    name: 'slipway_queued_tasks',
    help: 'Tasks waiting for a worker',
    registers: [registry],
    collect() {
      this.set(queueSummary().queued);
    },
  });
  new Gauge({
    name: 'slipway_oldest_queued_task_seconds',
    help: 'Seconds the oldest queued task has waited for a worker; 0 with an empty queue',
    registers: [registry],
    collect() {
      this.set(queueSummary().oldestSeconds ?? 0);
    },
  });

  registerHealthGauges(registry, context);

  app.addHook('onResponse', (request, reply, done) => {
    requestDuration.observe(
      {
        method: request.method,
        route: request.routeOptions.url ?? 'unknown',
        status: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
    done();
  });

  app.get(
    '/metrics',
    {
      schema: {
        tags: ['metrics'],
        summary: 'Prometheus metrics',
        description:
          'Exports `slipway_jobs{status}` (jobs in each status), `slipway_queued_tasks`, ' +
          '`slipway_oldest_queued_task_seconds` (0 with an empty queue), ' +
          '`slipway_http_request_duration_seconds{method,route,status}`, ' +
          '`slipway_health_check_status{component,status}`, ' +
          '`slipway_health_check_latency_ms{component}` and the Node.js process metrics of ' +
          'prom-client, prefixed `slipway_`. A scrape counts the waiting, queued and running ' +
          'jobs and reads the finished ones from a table of counts, so its cost does not grow ' +
          'with the number of finished jobs.',
        security: [{ bearerAuth: [] }],
        response: {
          200: {
            description: "the metrics in Prometheus' text format",
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
          401: ErrorSchema,
          403: ErrorSchema,
        },
      },
      config: { roles: ['read', 'trigger', 'agent'] },
    },
    async (_request, reply) => {
      reply.type(registry.contentType);
      return registry.metrics();
    },
  );
}
