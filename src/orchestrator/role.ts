/**
 * The `orchestrator` role: the watchdog (lease expiry, dependency timeouts) and the
 * scheduled tasks. Several processes may run it at once (see scheduler.ts and watchdog.ts).
 */
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { healthChecksTask } from '../health/scheduled.js';
import { runScheduledBackup } from './backup.js';
import { runCleanup } from './cleanup.js';
import { Scheduler, type ScheduledTask } from './scheduler.js';
import { runSweep } from './sweep.js';
import { Watchdog } from './watchdog.js';

/**
 * Scheduled tasks that other packages add, such as the health checks. A task here runs under
 * the same lock name in every orchestrator process, so it runs once per interval.
 */
export const EXTRA_SCHEDULED_TASKS: Array<(context: AppContext) => ScheduledTask | undefined> = [
  healthChecksTask,
];

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
  ];
  for (const make of EXTRA_SCHEDULED_TASKS) {
    const task = make(context);
    if (task !== undefined) tasks.push(task);
  }
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
