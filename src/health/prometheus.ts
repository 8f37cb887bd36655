/** Prometheus gauges of each health check's status and latency, for alerts and trends. */
import { Gauge, type Registry } from 'prom-client';
import type { AppContext } from '../app/context.js';
import { latestMetrics } from './metrics.js';
import { HEALTH_STATES } from './types.js';

export function registerHealthGauges(registry: Registry, context: AppContext): void {
  new Gauge({
    name: 'slipway_health_check_status',
    help: 'Status of each health check after its thresholds: 1 for the current status, else 0',
    labelNames: ['component', 'status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const row of await latestResults(context)) {
        for (const status of HEALTH_STATES) {
          this.set({ component: row.component, status }, row.status === status ? 1 : 0);
        }
      }
    },
  });
  new Gauge({
    name: 'slipway_health_check_latency_ms',
    help: 'Latency of the latest result of each health check, in milliseconds',
    labelNames: ['component'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const row of await latestResults(context)) {
        if (row.latency_ms !== null) this.set({ component: row.component }, row.latency_ms);
      }
    },
  });
}

function latestResults(context: AppContext) {
  const names = context.pipelines.healthChecks.map((check) => check.name);
  return latestMetrics(context.store.db, names);
}
