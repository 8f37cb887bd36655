import { sql, type Kysely } from 'kysely';

/**
 * Indexes the tasks that ended while their worker still ran the step: a status update ended
 * them, and they keep their lease until the worker confirms that the step stopped. The other
 * jobs of their concurrency group wait for those tasks (see claimCandidates), so every claim
 * looks them up. There are seldom more than a few.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX tasks_stopping ON tasks (lease_expires_at)
      WHERE status != 'running' AND lease_expires_at IS NOT NULL
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX tasks_stopping`.execute(db);
}
