/**
 * Jobs that a GitHub Actions OIDC token may act on. A stored trigger token is one secret that an
 * administrator gave out, but any workflow run of any allowed repository can get an OIDC token,
 * pull request runs included unless SLIPWAY_OIDC_REFS leaves them out. So an OIDC token cancels
 * and retries only the jobs that its own repository triggered, and reads only their logs,
 * because logs can contain what another repository's build printed. It may still read the
 * status of any job. Stored tokens are not restricted here.
 */
import type { JobRow } from '../store/schema.js';
import type { Principal } from './auth.js';
import { ApiError } from './errors.js';

/** The sentence that the OpenAPI description adds to the routes that call checkJobOwner. */
export const OIDC_JOB_OWNER_NOTE =
  'A GitHub Actions OIDC token may do this only for jobs whose `requested_by` is its own name, ' +
  '`github:owner/name`, and gets 403 with rule `job_owner` for other jobs.';

/**
 * Returns a 403 error when an OIDC token requests to `action` (a verb such as "cancel") a job
 * that another principal triggered, and undefined for every other request.
 */
export function checkJobOwner(
  job: Pick<JobRow, 'id' | 'requested_by'>,
  principal: Principal | undefined,
  action: string,
): ApiError | undefined {
  if (principal?.oidc === undefined) return undefined;
  // Jobs triggered before actor names were lower-cased keep the claim's case. Only OIDC actor
  // names contain a colon, so no other requester matches once lower-cased.
  if (job.requested_by?.toLowerCase() === principal.name) return undefined;
  const requester = job.requested_by === null ? 'no recorded token' : `"${job.requested_by}"`;
  return new ApiError(
    'forbidden',
    `OIDC token "${principal.name}" may ${action} only jobs that its repository triggered, and ` +
      `job ${job.id} was triggered by ${requester}; use a stored trigger token for other jobs`,
    'Authorization',
    'job_owner',
    { job_id: job.id, requested_by: job.requested_by },
  );
}
