import { sql, type Kysely } from 'kysely';

/**
 * Adds the Idempotency-Keys that name a job other than through jobs.idempotency_key. A request
 * with a key and a GitHub run id whose job already exists gets that job, but the job's own
 * column may already hold another key of the same token, or the job may belong to another
 * token. The key is recorded here, so that a later, different request under it gets 422
 * instead of creating a second job.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE idempotency_keys (
      requested_by TEXT NOT NULL,
      idempotency_key TEXT NOT NULL,
      job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
      request_hash TEXT NOT NULL,
      created_at TEXT NOT NULL,
      PRIMARY KEY (requested_by, idempotency_key)
    ) WITHOUT ROWID
  `.execute(db);
  // The cleanup deletes jobs by id, and the cascade finds their keys through this index.
  await sql`CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE idempotency_keys`.execute(db);
}
