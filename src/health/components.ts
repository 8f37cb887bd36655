/**
 * The health_components table: each check's status after thresholds, its streaks, its next
 * run and the lease that keeps two processes from running one check at the same time.
 */
import type { Kysely } from 'kysely';
import type { Store } from '../store/database.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database } from '../store/schema.js';
import { isoAfter } from '../util/time.js';
import type { HealthState } from './types.js';

export interface ComponentRow {
  name: string;
  status: HealthState | null;
  failures: number;
  successes: number;
  next_due_at: string | null;
  lease_expires_at: string | null;
  memo: string;
}

/** Time a claimed run may take beyond its timeout before another process may take over. */
const LEASE_MARGIN_MS = 30_000;

export async function readComponents(db: Kysely<Database>): Promise<Map<string, ComponentRow>> {
  const rows = await db
    .selectFrom('health_components')
    .select(['name', 'status', 'failures', 'successes', 'next_due_at', 'lease_expires_at', 'memo'])
    .execute();
  return new Map(rows.map((row) => [row.name, row]));
}

/** Returns whether a check may start now: it is due and no other process has its lease. */
export function isDue(row: ComponentRow | undefined, now: number): boolean {
  if (row === undefined) return true;
  if (row.lease_expires_at !== null && Date.parse(row.lease_expires_at) > now) return false;
  return row.next_due_at === null || Date.parse(row.next_due_at) <= now;
}

export interface Claim {
  previous: { status: HealthState | null; failures: number; successes: number };
  memo: Record<string, unknown>;
}

/**
 * Takes the lease on a check and schedules its next run, in one transaction, so that of two
 * processes that find it due only one runs it. Returns undefined when the check is not due
 * (unless `force`) or another process has its lease.
 */
export async function claimCheck(
  store: Store,
  name: string,
  holder: string,
  options: { intervalMs: number; leaseMs: number; force: boolean },
): Promise<Claim | undefined> {
  return store.write(async (trx) => {
    const now = Date.now();
    const row = await trx
      .selectFrom('health_components')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    const leased = row?.lease_expires_at != null && Date.parse(row.lease_expires_at) > now;
    if (leased || (!options.force && !isDue(row, now))) return undefined;
    const values = {
      lease_holder: holder,
      lease_expires_at: isoAfter(options.leaseMs + LEASE_MARGIN_MS, now),
      next_due_at: isoAfter(options.intervalMs, now),
      updated_at: new Date(now).toISOString(),
    };
    if (row === undefined) {
      await trx
        .insertInto('health_components')
        .values({ name, failures: 0, successes: 0, memo: '{}', ...values })
        .execute();
    } else {
      await trx.updateTable('health_components').set(values).where('name', '=', name).execute();
    }
    return {
      previous: {
        status: row?.status ?? null,
        failures: row?.failures ?? 0,
        successes: row?.successes ?? 0,
      },
      memo: parseJsonColumn<Record<string, unknown>>(row?.memo, {}),
    };
  });
}

/** Gives the lease back without a result, when the monitor stops during a run. */
export async function releaseCheck(store: Store, name: string, holder: string): Promise<void> {
  await store.write(async (trx) => {
    await trx
      .updateTable('health_components')
      .set({ lease_holder: null, lease_expires_at: null, next_due_at: null })
      .where('name', '=', name)
      .where('lease_holder', '=', holder)
      .execute();
  });
}
