import { sql, type Kysely } from 'kysely';

/** The built-in chain: integration tests run after ci, a deploy after integration tests. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    INSERT OR IGNORE INTO workflow_dependencies (workflow, depends_on, source, created_at)
    VALUES ('integration-tests', 'ci', 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
           ('deploy', 'integration-tests', 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DELETE FROM workflow_dependencies WHERE source = 'default'`.execute(db);
}
