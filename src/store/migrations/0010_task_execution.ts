import { sql, type Kysely } from 'kysely';

/** Execution details a worker reports when it finishes a task, and the claim order index. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tasks ADD COLUMN duration_ms INTEGER`.execute(db);
  // Claims pick the oldest queued tasks first.
  await sql`CREATE INDEX tasks_claim_order ON tasks (queued_at, id) WHERE status = 'queued'`.execute(
    db,
  );
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS tasks_claim_order`.execute(db);
  await sql`ALTER TABLE tasks DROP COLUMN duration_ms`.execute(db);
}
