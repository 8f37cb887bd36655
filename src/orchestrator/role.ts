/**
 * The `orchestrator` role: the watchdog (lease expiry, dependency timeouts) and the
 * scheduled tasks. Several processes may run it at once (see scheduler.ts and watchdog.ts).
 */
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { runHealthChecks } from '../health/runner.js';
import { findRunningProcesses } from '../store/running-processes.js';
import { runScheduledBackup } from './backup.js';
import { runCleanup } from './cleanup.js';
import { Scheduler, type ScheduledTask } from './scheduler.js';
import { runSweep } from './sweep.js';
import { Watchdog } from './watchdog.js';

/**
 * Runs the due health checks unless a `health-monitor` process (this one included) uses the
 * same database: then that role runs them on its own schedule. runHealthChecks claims each
 * check before running it, so a check never runs twice even when both start at once.
 */
async function runHealthCheckTask(context: AppContext): Promise<Record<string, unknown>> {
  const monitors = findRunningProcesses(context.store.path, { includeSelf: true }).filter((entry) =>
    entry.roles.includes('health-monitor'),
  );
  if (monitors.length > 0) {
    const pids = monitors.map((entry) => `${entry.hostname}:${entry.pid}`);
    return { skipped: `the health monitor runs the checks (${pids.join(', ')})` };
  }
  const outcomes = await runHealthChecks(context);
  return { checks: outcomes.length };
}

export function scheduledTasks(context: AppContext): ScheduledTask[] {
  const { intervals } = context.config;
  const tasks: ScheduledTask[] = [
    { name: 'sweep', intervalSeconds: intervals.orchestrationSeconds, run: runSweep },
    {
      name: 'cleanup',
      intervalSeconds: intervals.cleanupSeconds,
      run: async (ctx, audit) => ({ ...(await runCleanup(ctx, audit)) }),
    },
    { name: 'backup', intervalSeconds: intervals.backupSeconds, run: runScheduledBackup },
    {
      name: 'health-check',
      intervalSeconds: intervals.healthCheckSeconds,
      run: (ctx) => runHealthCheckTask(ctx),
    },
  ];
  return tasks;
}

export async function startOrchestrator(context: AppContext): Promise<RunningRole> {
  const watchdog = new Watchdog(context);
  const scheduler = new Scheduler(context, scheduledTasks(context));
  watchdog.start();
  scheduler.start();
  return {
    name: 'orchestrator',
    async stop() {
      await scheduler.stop();
      await watchdog.stop();
    },
  };
}
