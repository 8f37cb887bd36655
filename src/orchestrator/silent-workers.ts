/**
 * Workers that stopped without reporting it. A worker marks itself offline when it stops
 * cleanly, but one that was killed stays `online` in the workers table. Each start of a
 * worker registers a new worker id, so no later registration replaces the row, and the
 * health monitor's `workers` check would report it stale for as long as the row exists.
 */
import type { AppContext } from '../app/context.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { nowIso } from '../util/time.js';
import { apiServing } from './leases.js';

/** Returns how long a worker may be silent before it counts as stopped: 10 minutes, or four leases. */
export function silentAfterMs(leaseSeconds: number): number {
  return Math.max(10 * 60_000, 4 * leaseSeconds * 1000);
}

export interface SilentWorker {
  id: string;
  name: string;
  hostname: string;
  lastHeartbeatAt: string;
}

/**
 * Marks offline the workers whose last heartbeat is older than silentAfterMs, with a
 * `worker_marked_offline` audit row each, and returns them. A worker that was only cut off
 * registers again on its next claim, as after any other rejection of an offline worker.
 * While no API serves, no worker could send a heartbeat, so none is marked.
 */
export async function markSilentWorkersOffline(
  context: AppContext,
  audit: AuditContext,
): Promise<SilentWorker[]> {
  if (!apiServing(context)) return [];
  const silentMs = silentAfterMs(context.config.worker.leaseSeconds);
  const before = new Date(Date.now() - silentMs).toISOString();
  const marked = await context.store.write(async (trx) => {
    const rows = await trx
      .updateTable('workers')
      .set({ status: 'offline' })
      .where('status', '!=', 'offline')
      .where('last_heartbeat_at', '<', before)
      .returning(['id', 'name', 'hostname', 'last_heartbeat_at'])
      .execute();
    for (const row of rows) {
      await appendAudit(trx, audit, {
        action: 'worker_marked_offline',
        details: {
          worker_id: row.id,
          hostname: row.hostname,
          last_heartbeat_at: row.last_heartbeat_at,
          reason: `no heartbeat since ${row.last_heartbeat_at}, more than ${silentMs / 1000}s before ${nowIso()}`,
        },
      });
    }
    return rows;
  });
  for (const row of marked) {
    context.logger.warn(
      { workerId: row.id, hostname: row.hostname, lastHeartbeatAt: row.last_heartbeat_at },
      `marked worker ${row.id} offline: no heartbeat since ${row.last_heartbeat_at}`,
    );
  }
  return marked.map((row) => ({
    id: row.id,
    name: row.name,
    hostname: row.hostname,
    lastHeartbeatAt: row.last_heartbeat_at,
  }));
}
