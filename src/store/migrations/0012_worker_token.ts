import { sql, type Kysely } from 'kysely';

/**
 * The token a worker id was last registered with. Only that token (or an admin token) may
 * claim, report or change the status for the worker id while the token is active, so one
 * agent token cannot drain another's worker and take over its id. Rows from before this
 * migration have none, and the next registration records its token.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers ADD COLUMN token_id INTEGER`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers DROP COLUMN token_id`.execute(db);
}
