import { sql, type Kysely } from 'kysely';

/**
 * Clears workers.token_id when its token row is deleted. api_tokens.id is an INTEGER PRIMARY
 * KEY without AUTOINCREMENT, so SQLite gives the next token the id of a deleted token with the
 * highest id. Without this, a token created after `slipway serve` deleted its own token on
 * stop took over that worker id, and the next `slipway serve` could not register it.
 *
 * The UPDATE clears the ids that deletions before this migration left behind: those of no
 * token, and those of a token created after the worker's last heartbeat. Registration sets
 * last_heartbeat_at, so such a token cannot have registered the worker and took the id over.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    UPDATE workers SET token_id = NULL
    WHERE token_id IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM api_tokens
      WHERE api_tokens.id = workers.token_id
        AND api_tokens.created_at <= workers.last_heartbeat_at
    )
  `.execute(db);
  await sql`
    CREATE TRIGGER workers_token_deleted AFTER DELETE ON api_tokens
    BEGIN
      UPDATE workers SET token_id = NULL WHERE token_id = OLD.id;
    END
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER workers_token_deleted`.execute(db);
}
