/**
 * Rollback: deploy again the commit of an earlier successful deploy. Without a commit, the
 * target is the most recent successful deploy or rollback whose commit is neither the one
 * deployed now (LAST_DEPLOYED_COMMIT) nor one that a later successful rollback replaced, so
 * repeated rollbacks go further back instead of deploying a rolled-back commit again.
 */
import { sql, type Kysely } from 'kysely';
import type { AppContext } from '../app/context.js';
import { ApiError } from '../api/errors.js';
import type { AuditContext } from '../store/audit.js';
import type { Database, JobRow } from '../store/schema.js';
import { getStateVariable } from '../store/state-variables.js';
import { isSameCommit } from '../jobs/refs.js';
import { triggerJob } from './trigger.js';

/** Job types whose success changes what is deployed. */
export const DEPLOY_TYPES = ['deploy', 'rollback'] as const;

export interface RollbackResult {
  job: JobRow;
  commit: string;
  /** The commit deployed when the rollback was requested, if any. */
  replacing: string | null;
}

export async function executeRollback(
  context: AppContext,
  commit: string | undefined,
  audit: AuditContext,
): Promise<RollbackResult> {
  const type = rollbackJobType(context);
  const current = await currentDeployedCommit(context);
  const source = commit === undefined ? await rollbackSource(context, current) : undefined;
  const target = commit ?? source?.commit_sha ?? null;
  if (target === null) {
    throw new ApiError(
      'no_previous_deploy',
      current === null
        ? 'nothing to roll back to: no deploy has succeeded yet; pass {"commit": "<sha>"} to deploy a given commit'
        : `nothing to roll back to: no successful deploy of a commit other than ${current} exists that no later rollback replaced; pass {"commit": "<sha>"} to deploy a given commit`,
      'commit',
      'previous_deploy',
      { current_commit: current },
    );
  }
  const { job } = await triggerJob(
    context,
    {
      type,
      commit: target,
      branch: source?.branch ?? null,
      inputs: {},
      params: {},
      githubRunId: null,
      githubRunAttempt: null,
      idempotencyKey: null,
      auditDetails: {
        rollback_from: current,
        rollback_to: target,
        rollback_source_job: source?.id ?? null,
      },
    },
    audit,
  );
  return { job, commit: target, replacing: current };
}

/**
 * Returns the job type that runs a rollback: `rollback` when the pipeline file defines it,
 * else `deploy`. The error has no field, because the request names no job type.
 */
function rollbackJobType(context: AppContext): string {
  const { pipelines } = context.pipelines;
  if ('rollback' in pipelines) return 'rollback';
  if ('deploy' in pipelines) return 'deploy';
  throw new ApiError(
    'job_type_not_found',
    'the pipeline file defines neither a rollback nor a deploy job type, so a rollback has ' +
      'nothing to run; add a rollback or deploy pipeline to the pipeline file',
    undefined,
    'defined',
  );
}

/** LAST_DEPLOYED_COMMIT, or the commit of the latest successful deploy when it is unset. */
export async function currentDeployedCommit(context: AppContext): Promise<string | null> {
  const stored = await getStateVariable(context.store.db, 'LAST_DEPLOYED_COMMIT');
  if (stored !== undefined && stored !== '') return stored;
  return (await lastSuccessfulDeploy(context))?.commit_sha ?? null;
}

/**
 * Returns the most recent successful deploy or rollback that has a commit, skipping those of
 * `exceptCommit` unless it is null. A deploy whose commit is an abbreviation of
 * `exceptCommit`, or the other way round, deployed the same commit and is skipped too.
 */
export async function lastSuccessfulDeploy(
  context: AppContext,
  exceptCommit: string | null = null,
): Promise<JobRow | undefined> {
  return selectLastSuccessfulDeploy(context.store.db, exceptCommit).executeTakeFirst();
}

/**
 * Selects the job for lastSuccessfulDeploy. SQLite (3.53 measured) walks
 * jobs_type_status_finished backwards for each deploy type, and with LIMIT 1 it stops at the
 * first match of each type instead of sorting every successful deploy.
 */
export function selectLastSuccessfulDeploy(db: Kysely<Database>, exceptCommit: string | null) {
  let query = db
    .selectFrom('jobs')
    .selectAll()
    .where('type', 'in', DEPLOY_TYPES)
    .where('status', '=', 'success')
    .where('commit_sha', 'is not', null);
  if (exceptCommit !== null) {
    // Commits are lower-case hex, so a longer commit that starts with exceptCommit sorts
    // below exceptCommit || 'g'. A shorter one of at least 7 digits that starts
    // exceptCommit also names the same commit, as in the dependency checks.
    query = query
      .where('commit_sha', '!=', exceptCommit)
      .where(
        sql<boolean>`NOT (commit_sha > ${exceptCommit} AND commit_sha < ${exceptCommit} || 'g')`,
      )
      .where(
        sql<boolean>`NOT (length(commit_sha) >= 7 AND commit_sha < ${exceptCommit}
          AND commit_sha = substr(${exceptCommit}, 1, length(commit_sha)))`,
      );
  }
  return query.orderBy('finished_at', 'desc').orderBy('id', 'desc').limit(1);
}

/** Successful deploys read per query while rollbackSource walks back. */
const ROLLBACK_PAGE = 100;

/**
 * Returns the job whose commit a rollback without a commit deploys: the most recent successful
 * deploy or rollback whose commit is not `current` and was not replaced by a successful
 * rollback that finished after it. The commit a rollback replaced is the `rollback_from` of its
 * job_triggered audit row. A commit deployed again after that rollback counts again.
 *
 * NOTE: a rollback whose audit rows cleanup removed (RETENTION_AUDIT_LOG_DAYS) no longer marks
 * its replaced commit.
 */
async function rollbackSource(
  context: AppContext,
  current: string | null,
): Promise<JobRow | undefined> {
  const db = context.store.db;
  const replaced: string[] = [];
  for (let offset = 0; ; offset += ROLLBACK_PAGE) {
    const deploys = await selectLastSuccessfulDeploy(db, null)
      .clearSelect()
      .select(['id', 'commit_sha'])
      .limit(ROLLBACK_PAGE)
      .offset(offset)
      .execute();
    const replacedBy = await rollbackOrigins(
      db,
      deploys.map((job) => job.id),
    );
    // Newest first: a rollback marks the commit it replaced for the deploys older than it.
    for (const job of deploys) {
      const commit = job.commit_sha!;
      const matches = (other: string) => isSameCommit(commit, other);
      if (!(current !== null && matches(current)) && !replaced.some(matches)) {
        return db.selectFrom('jobs').selectAll().where('id', '=', job.id).executeTakeFirst();
      }
      const origin = replacedBy.get(job.id);
      if (origin !== undefined) replaced.push(origin);
    }
    if (deploys.length < ROLLBACK_PAGE) return undefined;
  }
}

/** Returns the commit that each of the given jobs replaced, for the jobs that were rollbacks. */
async function rollbackOrigins(
  db: Kysely<Database>,
  jobIds: string[],
): Promise<Map<string, string>> {
  const origins = new Map<string, string>();
  if (jobIds.length === 0) return origins;
  const rows = await db
    .selectFrom('audit_log')
    .select(['job_id', sql<string | null>`json_extract(details, '$.rollback_from')`.as('origin')])
    .where('action', '=', 'job_triggered')
    .where('job_id', 'in', jobIds)
    .execute();
  for (const row of rows) {
    if (row.job_id !== null && typeof row.origin === 'string') origins.set(row.job_id, row.origin);
  }
  return origins;
}
