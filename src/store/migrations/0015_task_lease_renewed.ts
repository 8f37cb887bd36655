import { sql, type Kysely } from 'kysely';

/**
 * When an API process that started gave a running task a new lease without hearing from its
 * worker. The worker's next heartbeat clears it. A later start does not renew such a task
 * again, so an API that restarts often cannot keep the task of a lost worker running.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks ADD COLUMN lease_renewed_at TEXT`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks DROP COLUMN lease_renewed_at`.execute(db);
}
