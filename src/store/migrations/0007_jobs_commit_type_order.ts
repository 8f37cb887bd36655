import { sql, type Kysely } from 'kysely';

/**
 * Adds id to jobs_commit_type so that it serves "the latest job of this type for this commit"
 * (dependency checks order by created_at and id) without a sort. Without id SQLite walked
 * jobs_type_created from the newest job of the type instead, reading each row's commit: 8 ms
 * for a commit 20,000 jobs back in a database of 60,000, inside the write transaction of every
 * trigger that needs a job type (a redeploy of an old commit, for example).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_commit_type`.execute(db);
  await sql`CREATE INDEX jobs_commit_type ON jobs (commit_sha, type, created_at, id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_commit_type`.execute(db);
  await sql`CREATE INDEX jobs_commit_type ON jobs (commit_sha, type, created_at)`.execute(db);
}
