import type { Migration, MigrationProvider } from 'kysely';
import * as initial from './0001_initial.js';
import * as defaultDependencies from './0002_default_dependencies.js';
import * as jobsCommitStatus from './0003_jobs_commit_status.js';
import * as tokenEnvVariable from './0004_token_env_variable.js';
import * as dropDuplicateTaskIndex from './0005_drop_duplicate_task_index.js';
import * as idempotencyKeyPerToken from './0006_idempotency_key_per_token.js';
import * as jobsCommitTypeOrder from './0007_jobs_commit_type_order.js';
import * as tasksLogExpiry from './0008_tasks_log_expiry.js';
import * as idempotencyKeys from './0009_idempotency_keys.js';
import * as taskExecution from './0010_task_execution.js';
import * as workerSession from './0011_worker_session.js';
import * as workerToken from './0012_worker_token.js';
import * as workerTokenDelete from './0013_worker_token_delete.js';
import * as taskWorkerSession from './0014_task_worker_session.js';
import * as taskLeaseRenewed from './0015_task_lease_renewed.js';
import * as workerUnavailableExecutors from './0016_worker_unavailable_executors.js';
import * as jobsTypeStatusFinished from './0020_jobs_type_status_finished.js';
import * as jobsConcurrencyGroupOrder from './0021_jobs_concurrency_group_order.js';
import * as jobStatusCounts from './0022_job_status_counts.js';
import * as healthState from './0030_health_state.js';
import * as healthMetricsComponentId from './0031_health_metrics_component_id.js';
import * as github from './0040_github.js';
import * as githubStatusOutboxDueRepository from './0041_github_status_outbox_due_repository.js';
import * as taskStopping from './0042_task_stopping.js';
import * as taskHandBacks from './0043_task_hand_backs.js';
import * as installation from './0044_installation.js';

/**
 * Every migration, by name. Names sort in the order they apply; numbers are grouped by
 * area (0001-0009 core, 0010-0019 execution, 0020-0029 orchestrator, 0030-0039 health,
 * 0040-0049 GitHub) so that work on different areas does not collide.
 */
const MIGRATIONS: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_default_dependencies': defaultDependencies,
  '0003_jobs_commit_status': jobsCommitStatus,
  '0004_token_env_variable': tokenEnvVariable,
  '0005_drop_duplicate_task_index': dropDuplicateTaskIndex,
  '0006_idempotency_key_per_token': idempotencyKeyPerToken,
  '0007_jobs_commit_type_order': jobsCommitTypeOrder,
  '0008_tasks_log_expiry': tasksLogExpiry,
  '0009_idempotency_keys': idempotencyKeys,
  '0010_task_execution': taskExecution,
  '0011_worker_session': workerSession,
  '0012_worker_token': workerToken,
  '0013_worker_token_delete': workerTokenDelete,
  '0014_task_worker_session': taskWorkerSession,
  '0015_task_lease_renewed': taskLeaseRenewed,
  '0016_worker_unavailable_executors': workerUnavailableExecutors,
  '0020_jobs_type_status_finished': jobsTypeStatusFinished,
  '0021_jobs_concurrency_group_order': jobsConcurrencyGroupOrder,
  '0022_job_status_counts': jobStatusCounts,
  '0030_health_state': healthState,
  '0031_health_metrics_component_id': healthMetricsComponentId,
  '0040_github': github,
  '0041_github_status_outbox_due_repository': githubStatusOutboxDueRepository,
  '0042_task_stopping': taskStopping,
  '0043_task_hand_backs': taskHandBacks,
  '0044_installation': installation,
};

/** Names of every migration this version has. */
export const migrationNames: readonly string[] = Object.keys(MIGRATIONS);

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => MIGRATIONS,
};
