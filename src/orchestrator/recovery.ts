/**
 * Recovery procedures from the pipeline file's `recovery:` section. `POST
 * /api/recovery/execute` and the health monitor's self-healing both run them through
 * runRecoveryProcedure, so every run is audited the same way.
 *
 *   restart_container  restart the named container through the Docker API
 *   rerun_failed       start a new attempt of the failed and skipped jobs of one commit
 *   run_pipeline       trigger a job of the named pipeline (e.g. `recovery`)
 */
import type { AppContext } from '../app/context.js';
import { ApiError } from '../api/errors.js';
import { engineCall, restartWithinLimit } from '../execution/engine-calls.js';
import { isCommitSha } from '../jobs/refs.js';
import type { Status } from '../jobs/status.js';
import type { RecoveryProcedure } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import type { JobRow } from '../store/schema.js';
import { getStateVariable } from '../store/state-variables.js';
import { dockerClient, dockerStatus } from './docker.js';
import { retryJob } from './retry.js';
import { triggerJob } from './trigger.js';

export interface RecoveryParams {
  /** Commit whose jobs `rerun_failed` retries, or that `run_pipeline` runs for. */
  commit?: string | undefined;
  branch?: string | undefined;
  /** Extra values passed to a `run_pipeline` job as its `params`. */
  params?: Record<string, unknown> | undefined;
}

export interface RecoveryJob {
  job_id: string;
  type: string;
  status: Status;
}

export interface RecoveryResult {
  procedure: string;
  action: RecoveryProcedure['action'];
  /** False when the procedure ran and failed, e.g. the container could not be restarted. */
  ok: boolean;
  message: string;
  jobs: RecoveryJob[];
  container?: { name: string; status: string } | undefined;
}

/** Seconds Docker waits for the container to stop before it kills it during a restart. */
const RESTART_STOP_SECONDS = 10;
/** Job outcomes that `rerun_failed` retries; `cancelled` was a person's decision. */
const RERUN_STATUSES: readonly Status[] = ['failure', 'error', 'timed_out', 'skipped'];

/**
 * Runs the recovery procedure `name` and writes a `recovery_executed` audit row with its
 * outcome. Throws ApiError for an unknown procedure or invalid parameters; a procedure that
 * runs and fails returns `ok: false` instead of throwing.
 */
export async function runRecoveryProcedure(
  context: AppContext,
  name: string,
  params: RecoveryParams,
  audit: AuditContext,
): Promise<RecoveryResult> {
  const procedure = findProcedure(context, name);
  const commit = params.commit?.toLowerCase();
  if (commit !== undefined && !isCommitSha(commit)) {
    throw new ApiError(
      'validation_failed',
      `commit ${JSON.stringify(params.commit)} must be a hex commit SHA of 7 to 64 characters`,
      'commit',
      'pattern',
    );
  }
  const started = Date.now();
  let result: RecoveryResult;
  switch (procedure.action) {
    case 'restart_container':
      result = await restartContainer(context, procedure);
      break;
    case 'rerun_failed':
      result = await rerunFailed(context, procedure, commit, audit);
      break;
    case 'run_pipeline':
      result = await runPipeline(context, procedure, { ...params, commit }, audit);
      break;
  }
  const durationMs = Date.now() - started;
  await context.store.write((trx) =>
    appendAudit(trx, audit, {
      action: 'recovery_executed',
      details: {
        procedure: name,
        recovery_action: procedure.action,
        ok: result.ok,
        message: result.message,
        jobs: result.jobs.map((job) => job.job_id),
        container: result.container?.name ?? null,
        commit: commit ?? null,
        duration_ms: durationMs,
      },
    }),
  );
  const log = context.logger.child({ procedure: name, action: procedure.action, durationMs });
  if (result.ok) log.info({ jobs: result.jobs.length }, 'recovery procedure finished');
  else log.warn({ reason: result.message }, 'recovery procedure failed');
  return result;
}

function findProcedure(context: AppContext, name: string): RecoveryProcedure {
  const procedure = context.pipelines.recovery[name];
  if (procedure === undefined) {
    const known = Object.keys(context.pipelines.recovery);
    throw new ApiError(
      'procedure_not_found',
      `recovery procedure "${name}" is not defined in the pipeline file ${context.pipelines.source}` +
        (known.length === 0 ? '; the file defines none' : `; defined: ${known.join(', ')}`),
      'procedure',
      'defined',
    );
  }
  return procedure;
}

async function restartContainer(
  context: AppContext,
  procedure: RecoveryProcedure,
): Promise<RecoveryResult> {
  const name = procedure.container!;
  const base = { procedure: procedure.name, action: procedure.action, jobs: [] };
  const container = dockerClient(context.config).getContainer(name);
  try {
    const timeoutMs = context.config.worker.dockerTimeoutMs;
    await restartWithinLimit(container, RESTART_STOP_SECONDS, timeoutMs);
    const state = (
      await engineCall('the inspection after the restart', timeoutMs, (abortSignal) =>
        container.inspect({ abortSignal }),
      )
    ).State;
    const status = state.Health?.Status ?? state.Status;
    return {
      ...base,
      ok: state.Running,
      message: state.Running
        ? `container ${name} restarted (${status})`
        : `container ${name} did not stay running after the restart (${status})`,
      container: { name, status },
    };
  } catch (error) {
    const message =
      dockerStatus(error) === 404
        ? `container ${name} not found on the Docker engine`
        : `restarting container ${name} failed: ${(error as Error).message}`;
    return { ...base, ok: false, message, container: { name, status: 'unknown' } };
  }
}

async function rerunFailed(
  context: AppContext,
  procedure: RecoveryProcedure,
  commit: string | undefined,
  audit: AuditContext,
): Promise<RecoveryResult> {
  const target = commit ?? (await getStateVariable(context.store.db, 'LAST_DEPLOYED_COMMIT'));
  if (target === undefined) {
    throw new ApiError(
      'validation_failed',
      'commit is required: rerun_failed re-runs the failed jobs of one commit and no LAST_DEPLOYED_COMMIT is set',
      'commit',
      'required',
    );
  }
  const latest = await latestJobPerType(context, target);
  const depths = await dependencyDepths(context);
  const toRetry = latest
    .filter((job) => RERUN_STATUSES.includes(job.status))
    .sort((a, b) => (depths.get(a.type) ?? 0) - (depths.get(b.type) ?? 0));
  const jobs: RecoveryJob[] = [];
  // Needed types go first, so a retried dependent finds its dependency active and waits.
  for (const job of toRetry) {
    const retried = await retryJob(context, job.id, audit);
    jobs.push({ job_id: retried.id, type: retried.type, status: retried.status });
  }
  return {
    procedure: procedure.name,
    action: procedure.action,
    ok: true,
    message:
      jobs.length === 0
        ? `no failed jobs for commit ${target}`
        : `re-running ${jobs.length} job(s) of commit ${target}`,
    jobs,
  };
}

async function latestJobPerType(context: AppContext, commit: string): Promise<JobRow[]> {
  const rows = await context.store.db
    .selectFrom('jobs')
    .selectAll()
    .where('commit_sha', '=', commit)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
  const seen = new Set<string>();
  return rows.filter((row) => !seen.has(row.type) && seen.add(row.type));
}

/** Depth of every job type in the dependency graph: 0 for types that need nothing. */
async function dependencyDepths(context: AppContext): Promise<Map<string, number>> {
  const edges = await context.store.db
    .selectFrom('workflow_dependencies')
    .select(['workflow', 'depends_on'])
    .execute();
  const depths = new Map<string, number>();
  const depthOf = (type: string, trail: Set<string>): number => {
    const known = depths.get(type);
    if (known !== undefined) return known;
    if (trail.has(type)) return 0;
    trail.add(type);
    const needs = edges.filter((edge) => edge.workflow === type);
    const depth = Math.max(0, ...needs.map((edge) => depthOf(edge.depends_on, trail) + 1));
    depths.set(type, depth);
    return depth;
  };
  for (const edge of edges) depthOf(edge.workflow, new Set());
  return depths;
}

async function runPipeline(
  context: AppContext,
  procedure: RecoveryProcedure,
  params: RecoveryParams,
  audit: AuditContext,
): Promise<RecoveryResult> {
  const commit =
    params.commit ?? (await getStateVariable(context.store.db, 'LAST_DEPLOYED_COMMIT')) ?? null;
  const { job } = await triggerJob(
    context,
    {
      type: procedure.pipeline!,
      commit,
      branch: params.branch ?? null,
      inputs: {},
      params: params.params ?? {},
      githubRunId: null,
      githubRunAttempt: null,
      idempotencyKey: null,
      auditDetails: { recovery_procedure: procedure.name },
    },
    audit,
  );
  return {
    procedure: procedure.name,
    action: procedure.action,
    ok: true,
    message: `triggered ${job.type} job ${job.id}${commit === null ? '' : ` for commit ${commit}`}`,
    jobs: [{ job_id: job.id, type: job.type, status: job.status }],
  };
}
