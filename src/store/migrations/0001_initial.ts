import { sql, type Kysely } from 'kysely';

const STATUS_CHECK = `('waiting','queued','running','success','failure','error','timed_out','cancelled','skipped')`;

export async function up(db: Kysely<unknown>): Promise<void> {
  const statements = [
    `CREATE TABLE jobs (
      id TEXT PRIMARY KEY,
      type TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ${STATUS_CHECK}),
      commit_sha TEXT,
      branch TEXT,
      params TEXT NOT NULL DEFAULT '{}',
      github_run_id TEXT,
      github_run_attempt INTEGER,
      idempotency_key TEXT,
      request_hash TEXT,
      attempt INTEGER NOT NULL DEFAULT 1,
      reason TEXT,
      requested_by TEXT,
      concurrency_group TEXT,
      pipeline TEXT NOT NULL DEFAULT '{}',
      created_at TEXT NOT NULL,
      queued_at TEXT,
      started_at TEXT,
      finished_at TEXT,
      updated_at TEXT NOT NULL
    ) STRICT`,
    `CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
      WHERE idempotency_key IS NOT NULL`,
    `CREATE UNIQUE INDEX jobs_github_run ON jobs (type, github_run_id, github_run_attempt)
      WHERE github_run_id IS NOT NULL`,
    `CREATE INDEX jobs_created ON jobs (created_at, id)`,
    `CREATE INDEX jobs_status_created ON jobs (status, created_at, id)`,
    `CREATE INDEX jobs_type_created ON jobs (type, created_at, id)`,
    `CREATE INDEX jobs_commit_type ON jobs (commit_sha, type, created_at)`,
    `CREATE INDEX jobs_branch_created ON jobs (branch, created_at, id)`,
    `CREATE INDEX jobs_concurrency_group ON jobs (concurrency_group, status)
      WHERE concurrency_group IS NOT NULL`,

    `CREATE TABLE tasks (
      id TEXT PRIMARY KEY,
      job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
      job_attempt INTEGER NOT NULL,
      idx INTEGER NOT NULL,
      name TEXT NOT NULL,
      matrix TEXT NOT NULL DEFAULT '{}',
      status TEXT NOT NULL CHECK (status IN ${STATUS_CHECK}),
      executor TEXT,
      worker_id TEXT,
      lease_expires_at TEXT,
      attempt INTEGER NOT NULL DEFAULT 0,
      max_attempts INTEGER NOT NULL DEFAULT 3,
      exit_code INTEGER,
      log_path TEXT,
      reason TEXT,
      cancel_requested_at TEXT,
      created_at TEXT NOT NULL,
      queued_at TEXT,
      started_at TEXT,
      finished_at TEXT,
      updated_at TEXT NOT NULL,
      UNIQUE (job_id, job_attempt, idx)
    ) STRICT`,
    `CREATE INDEX tasks_status_queued ON tasks (status, queued_at)`,
    `CREATE INDEX tasks_job ON tasks (job_id, job_attempt, idx)`,
    `CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'running'`,
    `CREATE INDEX tasks_worker ON tasks (worker_id) WHERE worker_id IS NOT NULL`,

    `CREATE TABLE workflow_dependencies (
      workflow TEXT NOT NULL,
      depends_on TEXT NOT NULL,
      source TEXT NOT NULL DEFAULT 'default',
      created_at TEXT NOT NULL,
      PRIMARY KEY (workflow, depends_on),
      CHECK (workflow <> depends_on)
    ) STRICT`,

    `CREATE TABLE state_variables (
      name TEXT PRIMARY KEY,
      value TEXT NOT NULL,
      updated_at TEXT NOT NULL,
      synced_at TEXT,
      synced_value TEXT
    ) STRICT`,

    `CREATE TABLE health_metrics (
      id INTEGER PRIMARY KEY,
      component TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('healthy','degraded','unhealthy')),
      latency_ms REAL,
      details TEXT NOT NULL DEFAULT '{}',
      recorded_at TEXT NOT NULL
    ) STRICT`,
    `CREATE INDEX health_metrics_component_recorded ON health_metrics (component, recorded_at)`,
    `CREATE INDEX health_metrics_recorded ON health_metrics (recorded_at)`,

    `CREATE TABLE audit_log (
      id INTEGER PRIMARY KEY,
      action TEXT NOT NULL,
      actor TEXT NOT NULL,
      job_id TEXT,
      task_id TEXT,
      request_id TEXT,
      source TEXT,
      details TEXT NOT NULL DEFAULT '{}',
      created_at TEXT NOT NULL
    ) STRICT`,
    `CREATE INDEX audit_log_created ON audit_log (created_at)`,
    `CREATE INDEX audit_log_job ON audit_log (job_id, id) WHERE job_id IS NOT NULL`,
    `CREATE INDEX audit_log_action ON audit_log (action, id)`,

    `CREATE TABLE api_tokens (
      id INTEGER PRIMARY KEY,
      name TEXT NOT NULL UNIQUE,
      role TEXT NOT NULL CHECK (role IN ('read','trigger','agent','admin')),
      token_hash TEXT NOT NULL UNIQUE,
      prefix TEXT NOT NULL,
      created_at TEXT NOT NULL,
      last_used_at TEXT,
      revoked_at TEXT
    ) STRICT`,

    `CREATE TABLE workers (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      hostname TEXT NOT NULL,
      executors TEXT NOT NULL DEFAULT '[]',
      labels TEXT NOT NULL DEFAULT '[]',
      capacity INTEGER NOT NULL,
      version TEXT,
      status TEXT NOT NULL CHECK (status IN ('online','draining','offline')),
      registered_at TEXT NOT NULL,
      last_heartbeat_at TEXT NOT NULL
    ) STRICT`,

    `CREATE TABLE scheduler_locks (
      name TEXT PRIMARY KEY,
      holder TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      last_started_at TEXT,
      last_finished_at TEXT
    ) STRICT`,
  ];
  for (const statement of statements) {
    await sql.raw(statement).execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  const tables = [
    'scheduler_locks',
    'workers',
    'api_tokens',
    'audit_log',
    'health_metrics',
    'state_variables',
    'workflow_dependencies',
    'tasks',
    'jobs',
  ];
  for (const table of tables) {
    await sql.raw(`DROP TABLE IF EXISTS ${table}`).execute(db);
  }
}
