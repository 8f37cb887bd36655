/**
 * `workers` check: every registered worker has sent a heartbeat recently and can run all its
 * executors.
 */
import { parseJsonColumn } from '../../store/json.js';
import type { WorkersCheckSettings } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';

/** Workers listed in the details at most; the counts cover all of them. */
const MAX_LISTED = 50;
/**
 * Milliseconds until an unhealthy result is checked again. A stack whose health monitor starts
 * next to its first worker finds no worker at the first run, and should not stay unhealthy
 * for a whole interval (5 minutes by default) once the worker has registered.
 */
const UNHEALTHY_RECHECK_MS = 15_000;

export async function probeWorkers(
  settings: WorkersCheckSettings,
  context: ProbeContext,
): Promise<ProbeResult> {
  const rows = await context.app.store.db
    .selectFrom('workers')
    .select(['id', 'name', 'hostname', 'status', 'last_heartbeat_at', 'unavailable_executors'])
    .where('status', '!=', 'offline')
    .orderBy('last_heartbeat_at', 'desc')
    .execute();
  const now = Date.now();
  const workers = rows.map((row) => {
    const ageMs = now - Date.parse(row.last_heartbeat_at);
    return {
      id: row.id,
      name: row.name,
      hostname: row.hostname,
      status: row.status,
      last_heartbeat_at: row.last_heartbeat_at,
      age_seconds: Math.max(0, Math.round(ageMs / 1000)),
      stale: ageMs > settings.staleAfterMs,
      unavailable_executors: parseJsonColumn<string[]>(row.unavailable_executors, []),
    };
  });
  const stale = workers.filter((worker) => worker.stale);
  const online = workers.filter((worker) => !worker.stale && worker.status === 'online');
  const details = {
    registered: workers.length,
    online: online.length,
    stale: stale.length,
    min_online: settings.minOnline,
    stale_after_seconds: settings.staleAfterMs / 1000,
    workers: workers.slice(0, MAX_LISTED),
  };
  // Without SLIPWAY_WORKER_NAME, every worker process of a host has the host name as its name
  // and a new id, so the id is shown when it differs from the name.
  const staleNames = stale
    .slice(0, 5)
    .map((worker) =>
      worker.name === worker.id
        ? `${worker.name} (${worker.age_seconds}s ago)`
        : `${worker.name} (id ${worker.id}, ${worker.age_seconds}s ago)`,
    )
    .join(', ');
  if (online.length < settings.minOnline) {
    return {
      status: 'unhealthy',
      recheckInMs: UNHEALTHY_RECHECK_MS,
      reason:
        `${online.length} online worker(s) sent a heartbeat in the last ` +
        `${settings.staleAfterMs / 1000}s, fewer than min_online of ${settings.minOnline}` +
        (staleNames === '' ? '' : `; stale: ${staleNames}`),
      details,
    };
  }
  if (stale.length > 0) {
    return {
      status: 'degraded',
      reason: `${stale.length} worker(s) sent no heartbeat in the last ${settings.staleAfterMs / 1000}s: ${staleNames}`,
      details,
    };
  }
  // A worker leaves an executor out of its claims while it cannot run it (a Docker engine that
  // does not respond), so the tasks that need it wait.
  const limited = online.filter((worker) => worker.unavailable_executors.length > 0);
  if (limited.length > 0) {
    const names = limited
      .slice(0, 5)
      .map((worker) => `${worker.id} (${worker.unavailable_executors.join(', ')})`)
      .join(', ');
    return {
      status: 'degraded',
      reason: `${limited.length} worker(s) cannot run some of their executors now: ${names}`,
      details,
    };
  }
  return { status: 'healthy', details };
}
