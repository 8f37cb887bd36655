import { sql, type Kysely } from 'kysely';

/**
 * Makes an Idempotency-Key unique per requester (the token name in jobs.requested_by) instead of
 * across all clients. With one global key space, a client that sent another client's key and
 * body got that client's job back with 200, and two clients that happened to pick the same key
 * got 422 for requests that had nothing to do with each other.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_idempotency_key`.execute(db);
  await sql`
    CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (requested_by, idempotency_key)
      WHERE idempotency_key IS NOT NULL
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_idempotency_key`.execute(db);
  await sql`
    CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
      WHERE idempotency_key IS NOT NULL
  `.execute(db);
}
