import { sql, type Kysely } from 'kysely';

/**
 * GitHub integration tables: the commit status outbox, which keeps reports across restarts
 * until GitHub accepts them, and the webhook deliveries already handled, by delivery id.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    `CREATE TABLE github_status_outbox (
      id INTEGER PRIMARY KEY,
      repository TEXT NOT NULL,
      commit_sha TEXT NOT NULL,
      context TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('pending','success','failure','error')),
      description TEXT NOT NULL,
      target_url TEXT,
      job_id TEXT NOT NULL,
      task_id TEXT,
      status TEXT NOT NULL,
      outcome TEXT NOT NULL DEFAULT 'pending'
        CHECK (outcome IN ('pending','sent','superseded','failed')),
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at TEXT NOT NULL,
      last_error TEXT,
      created_at TEXT NOT NULL,
      sent_at TEXT
    ) STRICT`,
    `CREATE INDEX github_status_outbox_due ON github_status_outbox (next_attempt_at, id)
      WHERE outcome = 'pending'`,
    `CREATE INDEX github_status_outbox_key ON github_status_outbox
      (repository, commit_sha, context, id)`,
    `CREATE INDEX github_status_outbox_job ON github_status_outbox (job_id, id)`,

    `CREATE TABLE github_webhook_deliveries (
      delivery_id TEXT PRIMARY KEY,
      event TEXT NOT NULL,
      outcome TEXT NOT NULL,
      job_id TEXT,
      details TEXT NOT NULL DEFAULT '{}',
      received_at TEXT NOT NULL
    ) STRICT`,
    `CREATE INDEX github_webhook_deliveries_received ON github_webhook_deliveries (received_at)`,
  ];
  for (const statement of statements) {
    await sql.raw(statement).execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw('DROP TABLE IF EXISTS github_webhook_deliveries').execute(db);
  await sql.raw('DROP TABLE IF EXISTS github_status_outbox').execute(db);
}
