import { sql, type Kysely } from 'kysely';

/**
 * The random session value a worker process sends when it registers, so the API can tell a
 * second process that claims a running worker's id from the same process registering again.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers ADD COLUMN session TEXT`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers DROP COLUMN session`.execute(db);
}
