/**
 * A named lease in `scheduler_locks`, so that one process at a time sends commit statuses
 * or runs the scheduled variable sync, even with several API processes on one database.
 */
import type { Store } from '../store/database.js';
import { isoAfter, nowIso } from '../util/time.js';

/**
 * Takes or extends the lease `name` for `holder` until `ttlMs` from now. Returns true when
 * the holder has it: the lease was free, had expired, or was already its own.
 */
export async function holdLease(
  store: Store,
  name: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  return store.write(async (trx) => {
    const now = nowIso();
    const expiresAt = isoAfter(ttlMs);
    const current = await trx
      .selectFrom('scheduler_locks')
      .select(['holder', 'expires_at'])
      .where('name', '=', name)
      .executeTakeFirst();
    if (current === undefined) {
      await trx
        .insertInto('scheduler_locks')
        .values({
          name,
          holder,
          expires_at: expiresAt,
          last_started_at: now,
          last_finished_at: null,
        })
        .execute();
      return true;
    }
    if (current.holder !== holder && current.expires_at > now) return false;
    await trx
      .updateTable('scheduler_locks')
      .set({ holder, expires_at: expiresAt, last_started_at: now })
      .where('name', '=', name)
      .execute();
    return true;
  });
}

/** Gives the lease up early, if `holder` still has it. */
export async function releaseLease(store: Store, name: string, holder: string): Promise<void> {
  await store.write(async (trx) => {
    await trx
      .updateTable('scheduler_locks')
      .set({ expires_at: nowIso(), last_finished_at: nowIso() })
      .where('name', '=', name)
      .where('holder', '=', holder)
      .execute();
  });
}
