/**
 * Retention of the GitHub tables: sent, superseded and failed commit status reports, and
 * handled webhook deliveries, older than RETENTION_JOBS_DAYS. Pending reports are kept,
 * because the sender gives them up after a day and marks them failed first.
 */
import type { Kysely } from 'kysely';
import type { AppContext } from '../app/context.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import type { Database } from '../store/schema.js';

const DAY_MS = 86_400_000;

export interface PruneSummary {
  statusReports: number;
  webhookDeliveries: number;
}

/** Deletes old rows of both tables in one transaction with its audit row; returns the counts. */
export async function pruneGitHubRecords(
  context: AppContext,
  audit: AuditContext,
  now: number = Date.now(),
): Promise<PruneSummary> {
  const days = context.config.retention.jobsDays;
  const cutoff = new Date(now - days * DAY_MS).toISOString();
  return context.store.write(async (trx) => {
    const reports = await (await deleteOldReports(trx, cutoff)).executeTakeFirst();
    const deliveries = await trx
      .deleteFrom('github_webhook_deliveries')
      .where('received_at', '<', cutoff)
      .executeTakeFirst();
    const summary = {
      statusReports: Number(reports.numDeletedRows),
      webhookDeliveries: Number(deliveries.numDeletedRows),
    };
    if (summary.statusReports + summary.webhookDeliveries > 0) {
      await appendAudit(trx, audit, {
        action: 'github_records_pruned',
        details: { ...summary, retention_days: days, cutoff },
      });
    }
    return summary;
  });
}

/**
 * Returns the delete of sent, superseded and failed reports created before `cutoff`. Reports
 * get increasing ids as they are created, so the first report at or after the cutoff bounds
 * the ids to delete. Without that bound the delete read the whole table inside its write
 * transaction: 59 ms for 292,570 synthetic reports.
 * NOTE: a report whose clock went back below an earlier report's waits for a later run.
 */
export async function deleteOldReports(db: Kysely<Database>, cutoff: string) {
  const firstKept = await db
    .selectFrom('github_status_outbox')
    .select('id')
    .where('created_at', '>=', cutoff)
    .orderBy('id')
    .limit(1)
    .executeTakeFirst();
  let query = db
    .deleteFrom('github_status_outbox')
    .where('outcome', '!=', 'pending')
    .where('created_at', '<', cutoff);
  if (firstKept !== undefined) query = query.where('id', '<', firstKept.id);
  return query;
}
