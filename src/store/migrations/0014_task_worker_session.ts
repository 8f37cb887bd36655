import { sql, type Kysely } from 'kysely';

/**
 * The session of the worker process that claimed a running task. A claim whose response was
 * lost leaves the task leased to a worker that does not know it; that process's next claim
 * gets the task again, and a later process with the same worker id does not.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks ADD COLUMN worker_session TEXT`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks DROP COLUMN worker_session`.execute(db);
}
