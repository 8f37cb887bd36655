import { sql, type Kysely } from 'kysely';

/**
 * How often a stopping worker handed the task back. A hand-back is not a lost worker, so the
 * attempts that SLIPWAY_MAX_TASK_ATTEMPTS and a pipeline's `retries` allow count without them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks ADD COLUMN hand_backs INTEGER NOT NULL DEFAULT 0`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks DROP COLUMN hand_backs`.execute(db);
}
