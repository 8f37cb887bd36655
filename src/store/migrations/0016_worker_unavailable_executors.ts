import { sql, type Kysely } from 'kysely';

/**
 * The registered executors that a worker's latest claim left out, because the worker cannot
 * run them now (its Docker engine does not respond). It explains a queued job that waits for
 * them and is null until a claim leaves one out.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers ADD COLUMN unavailable_executors TEXT`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workers DROP COLUMN unavailable_executors`.execute(db);
}
