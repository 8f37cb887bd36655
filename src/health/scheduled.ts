/**
 * The health checks as an orchestrator scheduled task named `health-checks`: it runs every
 * due check once per HEALTH_CHECK_INTERVAL, and on demand with `slipway run-task
 * health-checks`. It shares the checks' leases with the health monitor role, so a check that
 * both run in one interval still runs once.
 */
import type { AppContext } from '../app/context.js';
import type { ScheduledTask } from '../orchestrator/scheduler.js';
import { runHealthChecks } from './runner.js';

export function healthChecksTask(context: AppContext): ScheduledTask | undefined {
  if (context.pipelines.healthChecks.length === 0) return undefined;
  return {
    name: 'health-checks',
    intervalSeconds: context.config.intervals.healthCheckSeconds,
    async run(ctx) {
      const outcomes = await runHealthChecks(ctx);
      const count = (status: string) =>
        outcomes.filter((outcome) => outcome.status === status).length;
      return {
        checks: outcomes.length,
        // Checks that ran within their interval, here or in the health monitor, or run there now.
        not_due: context.pipelines.healthChecks.length - outcomes.length,
        healthy: count('healthy'),
        degraded: count('degraded'),
        unhealthy: count('unhealthy'),
        actions: outcomes.filter((outcome) => outcome.action !== undefined).length,
      };
    },
  };
}
