/**
 * Row types of every table, as Kysely sees them. Times are UTC ISO 8601 strings with a `Z`;
 * JSON columns hold text that the store modules parse.
 */
import type { Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { Status } from '../jobs/status.js';

export interface JobsTable {
  id: string;
  type: string;
  status: Status;
  commit_sha: string | null;
  branch: string | null;
  /** JSON object: matrix inputs and `params` from the trigger body. */
  params: string;
  github_run_id: string | null;
  github_run_attempt: number | null;
  idempotency_key: string | null;
  /** SHA-256 of the request that created the job, to detect a reused Idempotency-Key. */
  request_hash: string | null;
  attempt: number;
  reason: string | null;
  requested_by: string | null;
  concurrency_group: string | null;
  /** JSON snapshot of the pipeline the job runs, taken when it was created. */
  pipeline: string;
  created_at: string;
  queued_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

export interface TasksTable {
  id: string;
  job_id: string;
  /** The job attempt this task belongs to; a retry of the job creates new tasks. */
  job_attempt: number;
  /** Position of the matrix combination within the job attempt, from 0. */
  idx: number;
  name: string;
  /** JSON object: one value per matrix axis. */
  matrix: string;
  status: Status;
  executor: string | null;
  worker_id: string | null;
  /** Session of the worker process that claimed the current attempt (see the claim route). */
  worker_session: string | null;
  /**
   * End of the worker's lease while the task runs. A task that a status update ended while
   * its worker ran the step keeps the lease until the worker confirms that the step stopped.
   */
  lease_expires_at: string | null;
  /**
   * When a starting API process renewed the lease without word from the worker; the worker's
   * next heartbeat clears it (see renewLeasesOnStart).
   */
  lease_renewed_at: string | null;
  /** Lease attempt: counts how often the task was claimed, so a stale worker is fenced. */
  attempt: number;
  /** Claims that ended in a hand-back from a stopping worker, which use up no attempt. */
  hand_backs: Generated<number>;
  max_attempts: number;
  exit_code: number | null;
  log_path: string | null;
  reason: string | null;
  /** Milliseconds the worker spent on the task's last attempt, from checkout to the end. */
  duration_ms: number | null;
  /** Set when a cancel was requested while a worker held the task; the worker stops it. */
  cancel_requested_at: string | null;
  created_at: string;
  queued_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

export interface WorkflowDependenciesTable {
  workflow: string;
  depends_on: string;
  /** `default` for the built-in chain, `pipeline` for dependencies read from the pipeline file. */
  source: string;
  created_at: string;
}

export interface StateVariablesTable {
  name: string;
  value: string;
  updated_at: string;
  synced_at: string | null;
  synced_value: string | null;
}

export interface HealthMetricsTable {
  id: Generated<number>;
  component: string;
  status: 'healthy' | 'degraded' | 'unhealthy';
  latency_ms: number | null;
  details: string;
  recorded_at: string;
}

/** A health check's status after thresholds, its streaks and its schedule. */
export interface HealthComponentsTable {
  name: string;
  /** Status after the down/up thresholds; null before the first result. */
  status: 'healthy' | 'degraded' | 'unhealthy' | null;
  /** Status of the latest result itself. */
  observed: 'healthy' | 'degraded' | 'unhealthy' | null;
  /** Failing results in a row. */
  failures: number;
  /** Passing results in a row. */
  successes: number;
  reason: string | null;
  changed_at: string | null;
  last_checked_at: string | null;
  next_due_at: string | null;
  /** Process running the check now, until lease_expires_at. */
  lease_holder: string | null;
  lease_expires_at: string | null;
  /** JSON object a check keeps between runs (the last integrity check, restart counts). */
  memo: string;
  updated_at: string;
}

/** One self-healing action, taken or suppressed. */
export interface HealthActionsTable {
  id: Generated<number>;
  component: string;
  action: string;
  /** Container, job type or procedure the action acts on. */
  target: string | null;
  outcome: 'running' | 'succeeded' | 'failed' | 'suppressed';
  reason: string | null;
  details: string;
  created_at: string;
  finished_at: string | null;
}

export interface AuditLogTable {
  id: Generated<number>;
  action: string;
  actor: string;
  job_id: string | null;
  task_id: string | null;
  request_id: string | null;
  source: string | null;
  details: string;
  created_at: string;
}

export const TOKEN_ROLES = ['read', 'trigger', 'agent', 'admin'] as const;
export type TokenRole = (typeof TOKEN_ROLES)[number];

export interface ApiTokensTable {
  id: Generated<number>;
  name: string;
  role: TokenRole;
  /** SHA-256 of the token in hex; the token itself is never stored. */
  token_hash: string;
  /** First characters of the token, shown in listings so an operator can tell tokens apart. */
  prefix: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
  /** The environment variable the token was registered from, if any. */
  env_variable: Generated<string | null>;
}

export interface WorkersTable {
  id: string;
  name: string;
  hostname: string;
  /** JSON array of executor names this worker can run. */
  executors: string;
  /** JSON array of labels. */
  labels: string;
  capacity: number;
  version: string | null;
  status: 'online' | 'draining' | 'offline';
  registered_at: string;
  last_heartbeat_at: string;
  /** Random value from the registering process; null for rows from before it was recorded. */
  session: string | null;
  /**
   * api_tokens.id of the token the worker id was last registered with. It is null for rows from
   * before 0012, and once that token row is deleted.
   */
  token_id: number | null;
  /**
   * JSON array of the registered executors that the worker's latest claim left out, because
   * it cannot run them now. Null until a claim leaves one out, and again after a registration.
   */
  unavailable_executors: string | null;
}

export interface SchedulerLocksTable {
  name: string;
  holder: string;
  expires_at: string;
  last_started_at: string | null;
  last_finished_at: string | null;
}

export type GitHubState = 'pending' | 'success' | 'failure' | 'error';

/** One commit status report waiting for GitHub, or the record of one sent. */
export interface GitHubStatusOutboxTable {
  id: Generated<number>;
  /** `owner/name` the status is reported to. */
  repository: string;
  commit_sha: string;
  context: string;
  state: GitHubState;
  description: string;
  target_url: string | null;
  job_id: string;
  task_id: string | null;
  /** The Slipway status the report describes. */
  status: string;
  /** `pending` until sent; `superseded` when a newer report for the same context replaced it. */
  outcome: 'pending' | 'sent' | 'superseded' | 'failed';
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
  created_at: string;
  sent_at: string | null;
}

/** A GitHub webhook delivery that was handled, kept so a redelivery is recognised. */
export interface GitHubWebhookDeliveriesTable {
  delivery_id: string;
  event: string;
  /** `ping`, `queued`, `ignored`. */
  outcome: string;
  job_id: string | null;
  details: string;
  received_at: string;
}

/**
 * An Idempotency-Key that names a job it did not create: the request carried a GitHub run id
 * whose job already existed and held another key or belonged to another token.
 */
export interface IdempotencyKeysTable {
  /** The token name of the request, as in jobs.requested_by. */
  requested_by: string;
  idempotency_key: string;
  job_id: string;
  /** Hash of the request that sent the key, compared with later requests under it. */
  request_hash: string;
  created_at: string;
}

/**
 * The number of jobs in each finished status, one row per status. Triggers on jobs keep it
 * (src/store/migrations/0022_job_status_counts.ts), so no code writes it.
 */
export interface JobStatusCountsTable {
  status: Status;
  count: number;
}

/** Kept by Kysely's Migrator: one row per applied migration, named `NNNN_description`. */
export interface SchemaMigrationsTable {
  name: string;
  timestamp: string;
}

/** One row: the installation's id, made at random with the database. */
export interface InstallationTable {
  id: string;
  created_at: string;
}

export interface Database {
  installation: InstallationTable;
  jobs: JobsTable;
  tasks: TasksTable;
  workflow_dependencies: WorkflowDependenciesTable;
  state_variables: StateVariablesTable;
  health_metrics: HealthMetricsTable;
  health_components: HealthComponentsTable;
  health_actions: HealthActionsTable;
  audit_log: AuditLogTable;
  api_tokens: ApiTokensTable;
  workers: WorkersTable;
  scheduler_locks: SchedulerLocksTable;
  github_status_outbox: GitHubStatusOutboxTable;
  github_webhook_deliveries: GitHubWebhookDeliveriesTable;
  idempotency_keys: IdempotencyKeysTable;
  job_status_counts: JobStatusCountsTable;
  schema_migrations: SchemaMigrationsTable;
}

export type JobRow = Selectable<JobsTable>;
export type NewJob = Insertable<JobsTable>;
export type JobUpdate = Updateable<JobsTable>;
export type TaskRow = Selectable<TasksTable>;
export type NewTask = Insertable<TasksTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type TokenRow = Selectable<ApiTokensTable>;
export type WorkerRow = Selectable<WorkersTable>;
export type GitHubStatusRow = Selectable<GitHubStatusOutboxTable>;
