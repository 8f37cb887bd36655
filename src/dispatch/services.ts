/**
 * The API process's execution services, one set per AppContext: the task log store and the
 * dispatcher. The agent and log routes share them, so a log upload wakes a log follower and
 * a trigger wakes a waiting claim in the same process.
 */
import type { AppContext } from '../app/context.js';
import { TaskLogStore } from '../logs/task-log-store.js';
import { Dispatcher } from './dispatcher.js';

export interface ExecutionServices {
  logs: TaskLogStore;
  dispatcher: Dispatcher;
}

const SERVICES = new WeakMap<AppContext, ExecutionServices>();

export function executionServices(context: AppContext): ExecutionServices {
  let services = SERVICES.get(context);
  if (services === undefined) {
    const logs = new TaskLogStore(context.config.logPath, context.config.logMaxBytes);
    const dispatcher = new Dispatcher(context, (jobId, taskId, attempt) =>
      logs.pathFor(jobId, taskId, attempt),
    );
    services = { logs, dispatcher };
    SERVICES.set(context, services);
  }
  return services;
}

const LOG_STORES = new WeakMap<AppContext, TaskLogStore>();

/**
 * Returns the task log store: the API's, when this process serves the API, so that log
 * followers see what is appended, or else one of its own, without a dispatcher.
 */
export function taskLogStore(context: AppContext): TaskLogStore {
  const shared = SERVICES.get(context)?.logs;
  if (shared !== undefined) return shared;
  let own = LOG_STORES.get(context);
  if (own === undefined) {
    own = new TaskLogStore(context.config.logPath, context.config.logMaxBytes);
    LOG_STORES.set(context, own);
  }
  return own;
}

/** Stops the dispatcher and forgets the services, so a closed server holds no timers. */
export function closeExecutionServices(context: AppContext): void {
  const services = SERVICES.get(context);
  if (services === undefined) return;
  services.dispatcher.close();
  SERVICES.delete(context);
}
