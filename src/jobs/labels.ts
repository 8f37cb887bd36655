/**
 * Names that mark what Slipway creates outside its database: container labels and workspace
 * folders. Each installation has an instance id, made at random with its database, so a sweep
 * removes only what its own installation left behind, never another one's on the same engine.
 */
import type { Store } from '../store/database.js';

export const LABEL_MANAGED = 'slipway.managed';
export const LABEL_INSTANCE = 'slipway.instance';
export const LABEL_JOB = 'slipway.job';
export const LABEL_TASK = 'slipway.task';
export const LABEL_ATTEMPT = 'slipway.attempt';

const ids = new WeakMap<Store, string>();

/**
 * Returns the id of the installation that owns `store`'s database (the installation table,
 * filled by a migration). It never changes, so it is read once per store.
 * NOTE: a database restored from another installation's backup takes that installation's id.
 */
export function instanceId(store: Store): string {
  let id = ids.get(store);
  if (id === undefined) {
    const row = store.read((sqlite) => sqlite.prepare('SELECT id FROM installation').get()) as
      { id: string } | undefined;
    if (row === undefined) throw new Error(`the database ${store.path} has no installation id`);
    id = row.id;
    ids.set(store, id);
  }
  return id;
}
