import { sql, type Kysely } from 'kysely';

/**
 * Drops `tasks_job`, which has the same columns in the same order as the index of the table's
 * UNIQUE (job_id, job_attempt, idx) constraint. Every task insert wrote both, and queries by
 * job use the constraint's index just as well.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS tasks_job`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id, job_attempt, idx)`.execute(db);
}
