import { sql, type Kysely } from 'kysely';

/**
 * Adds creation order to the concurrency group index, so that a claim finds an older queued
 * job of a task's group with one range search. Without the order SQLite read every queued
 * job created before the task's job, of all groups, through jobs_status_created.
 *
 * The index stays partial on `concurrency_group IS NOT NULL`. A comparison of
 * concurrency_group with a bound value implies that condition whatever the value, so SQLite
 * (3.53) does not prepare such a statement again on each run. It does for a partial index
 * whose condition compares a column with a value, such as `status = 'queued'` (see migration
 * 0020).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_concurrency_group`.execute(db);
  await sql`
    CREATE INDEX jobs_concurrency_group ON jobs (concurrency_group, status, created_at, id)
      WHERE concurrency_group IS NOT NULL
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_concurrency_group`.execute(db);
  await sql`
    CREATE INDEX jobs_concurrency_group ON jobs (concurrency_group, status)
      WHERE concurrency_group IS NOT NULL
  `.execute(db);
}
