import type { Kysely } from 'kysely';
import { nowIso } from '../util/time.js';
import type { Database } from './schema.js';

/** Creates or updates a state variable; returns its previous value, if any. */
export async function setStateVariable(
  db: Kysely<Database>,
  name: string,
  value: string,
): Promise<string | undefined> {
  const existing = await db
    .selectFrom('state_variables')
    .select('value')
    .where('name', '=', name)
    .executeTakeFirst();
  const now = nowIso();
  await db
    .insertInto('state_variables')
    .values({ name, value, updated_at: now, synced_at: null, synced_value: null })
    .onConflict((oc) => oc.column('name').doUpdateSet({ value, updated_at: now }))
    .execute();
  return existing?.value;
}

export async function listStateVariables(db: Kysely<Database>) {
  return db.selectFrom('state_variables').selectAll().orderBy('name').execute();
}

export async function getStateVariable(
  db: Kysely<Database>,
  name: string,
): Promise<string | undefined> {
  const row = await db
    .selectFrom('state_variables')
    .select('value')
    .where('name', '=', name)
    .executeTakeFirst();
  return row?.value;
}
