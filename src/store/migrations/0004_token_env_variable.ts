import { sql, type Kysely } from 'kysely';

/**
 * Records which environment variable a token was registered from, so that a new value of
 * SLIPWAY_ADMIN_TOKEN can revoke the tokens of its earlier values. Existing tokens are marked
 * from their token_created audit rows where those rows are still kept.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE api_tokens ADD COLUMN env_variable TEXT`.execute(db);
  await sql`
    UPDATE api_tokens SET env_variable = 'SLIPWAY_ADMIN_TOKEN'
    WHERE role = 'admin' AND name IN (
      SELECT json_extract(details, '$.name') FROM audit_log
      WHERE action = 'token_created'
        AND json_extract(details, '$.origin') = 'SLIPWAY_ADMIN_TOKEN'
    )`.execute(db);
  await sql`
    UPDATE api_tokens SET env_variable = 'SLIPWAY_AGENT_TOKEN'
    WHERE role = 'agent' AND name = 'agent-from-env'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE api_tokens DROP COLUMN env_variable`.execute(db);
}
