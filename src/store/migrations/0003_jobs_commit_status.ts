import { sql, type Kysely } from 'kysely';

/**
 * Finding the waiting dependents of a finished job looks jobs up by commit and status. With
 * only the (commit_sha, type) index, a commit with thousands of jobs (a retry storm, a
 * benchmark) made every job end scan all of them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX jobs_commit_status ON jobs (commit_sha, status, type)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX jobs_commit_status`.execute(db);
}
