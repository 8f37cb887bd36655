import { sql, type Kysely } from 'kysely';

const HEALTH_STATES = `('healthy','degraded','unhealthy')`;

export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    // One row per health check: its status after thresholds, the streaks that move it, when
    // it runs next and which process holds the run, so several processes never run one
    // check at the same time and a restart keeps the streaks.
    `CREATE TABLE health_components (
      name TEXT PRIMARY KEY,
      status TEXT CHECK (status IN ${HEALTH_STATES}),
      observed TEXT CHECK (observed IN ${HEALTH_STATES}),
      failures INTEGER NOT NULL DEFAULT 0,
      successes INTEGER NOT NULL DEFAULT 0,
      reason TEXT,
      changed_at TEXT,
      last_checked_at TEXT,
      next_due_at TEXT,
      lease_holder TEXT,
      lease_expires_at TEXT,
      memo TEXT NOT NULL DEFAULT '{}',
      updated_at TEXT NOT NULL
    ) STRICT`,
    `CREATE TABLE health_actions (
      id INTEGER PRIMARY KEY,
      component TEXT NOT NULL,
      action TEXT NOT NULL,
      target TEXT,
      outcome TEXT NOT NULL
        CHECK (outcome IN ('running','succeeded','failed','suppressed')),
      reason TEXT,
      details TEXT NOT NULL DEFAULT '{}',
      created_at TEXT NOT NULL,
      finished_at TEXT
    ) STRICT`,
    `CREATE INDEX health_actions_component_created ON health_actions (component, created_at)`,
  ];
  for (const statement of statements) {
    await sql.raw(statement).execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw('DROP TABLE IF EXISTS health_actions').execute(db);
  await sql.raw('DROP TABLE IF EXISTS health_components').execute(db);
}
