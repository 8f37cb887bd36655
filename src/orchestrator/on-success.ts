import type { Transaction } from 'kysely';
import { isSameCommit } from '../jobs/refs.js';
import { renderTemplate } from '../pipeline/load.js';
import type { Pipeline } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database, JobRow } from '../store/schema.js';
import { setStateVariable } from '../store/state-variables.js';

/** Template values available to `on_success.state`. */
export function jobTemplateValues(job: JobRow): Record<string, string> {
  return {
    commit: job.commit_sha ?? '',
    branch: job.branch ?? '',
    job_id: job.id,
    type: job.type,
  };
}

/** Holds the commit that LAST_DEPLOYED_COMMIT had before the latest deploy changed it. */
export const PREVIOUS_COMMIT_VARIABLE = 'PREVIOUS_DEPLOYED_COMMIT';

/**
 * Sets the state variables the job's pipeline names under `on_success.state`. When
 * LAST_DEPLOYED_COMMIT changes to another commit, its old value moves to
 * PREVIOUS_DEPLOYED_COMMIT. A short and a full SHA of one commit count as the same commit.
 */
export async function applyOnSuccess(
  trx: Transaction<Database>,
  job: JobRow,
  audit: AuditContext,
): Promise<void> {
  const pipeline = parseJsonColumn<Partial<Pipeline>>(job.pipeline, {});
  const state = pipeline.onSuccess?.state ?? {};
  const values = jobTemplateValues(job);
  for (const [name, template] of Object.entries(state)) {
    const value = renderTemplate(template, values);
    const previous = await setStateVariable(trx, name, value);
    await appendAudit(trx, audit, {
      action: 'state_variable_set',
      jobId: job.id,
      details: { name, value, previous: previous ?? null },
    });
    if (
      name === 'LAST_DEPLOYED_COMMIT' &&
      previous !== undefined &&
      !isSameCommit(previous, value)
    ) {
      await setStateVariable(trx, PREVIOUS_COMMIT_VARIABLE, previous);
      await appendAudit(trx, audit, {
        action: 'state_variable_set',
        jobId: job.id,
        details: { name: PREVIOUS_COMMIT_VARIABLE, value: previous },
      });
    }
  }
}
