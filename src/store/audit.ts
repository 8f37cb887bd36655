import type BetterSqlite3 from 'better-sqlite3';
import type { Insertable, Kysely } from 'kysely';
import { nowIso } from '../util/time.js';
import { param, prepare } from './prepared.js';
import type { AuditLogTable, Database } from './schema.js';

/** Who did something and from where; every mutating request carries one. */
export interface AuditContext {
  /** Token name, worker id or a role such as `orchestrator`. */
  actor: string;
  requestId?: string | undefined;
  /** Source address of the request, or the host name of a background process. */
  source?: string | undefined;
  /** Details of the actor that every row of the request adds to its own details. */
  actorDetails?: Record<string, unknown> | undefined;
}

export interface AuditEntry {
  action: string;
  jobId?: string | null | undefined;
  taskId?: string | null | undefined;
  details?: Record<string, unknown> | undefined;
}

/**
 * Actors that Slipway writes in audit rows for its own work, and the name of the token it makes
 * from SLIPWAY_AGENT_TOKEN. A token of the same name would make its rows look like Slipway's, so
 * `slipway token create` rejects these names in any case of letters.
 */
export const RESERVED_ACTOR_NAMES: ReadonlySet<string> = new Set([
  'agent-from-env',
  'anonymous',
  'api',
  'github-retention',
  'github-variable-sync',
  'github-webhook',
  'health-monitor',
  'orchestrator',
  'serve',
  'slipway',
]);

type AuditRow = Required<Omit<Insertable<AuditLogTable>, 'id'>>;

function auditRow(context: AuditContext, entry: AuditEntry): AuditRow {
  return {
    action: entry.action,
    actor: context.actor,
    job_id: entry.jobId ?? null,
    task_id: entry.taskId ?? null,
    request_id: context.requestId ?? null,
    source: context.source ?? null,
    details: JSON.stringify(
      context.actorDetails === undefined
        ? (entry.details ?? {})
        : { ...entry.details, ...context.actorDetails },
    ),
    created_at: nowIso(),
  };
}

const INSERT_AUDIT = prepare<AuditRow>((db) =>
  db.insertInto('audit_log').values({
    action: param('action'),
    actor: param('actor'),
    job_id: param('job_id'),
    task_id: param('task_id'),
    request_id: param('request_id'),
    source: param('source'),
    details: param('details'),
    created_at: param('created_at'),
  }),
);

/** Appends one audit row; call it inside the transaction that makes the change. */
export async function appendAudit(
  db: Kysely<Database>,
  context: AuditContext,
  entry: AuditEntry,
): Promise<void> {
  await db.insertInto('audit_log').values(auditRow(context, entry)).execute();
}

/** appendAudit with a prepared statement, for a write's `sqlite` connection (see WriteWork). */
export function writeAudit(
  sqlite: BetterSqlite3.Database,
  context: AuditContext,
  entry: AuditEntry,
): void {
  INSERT_AUDIT.run(sqlite, auditRow(context, entry));
}

export interface AuditQuery {
  action?: string | undefined;
  jobId?: string | undefined;
  since?: string | undefined;
  /** Return rows with an id below this one (paging backwards through time). */
  beforeId?: number | undefined;
  limit: number;
}

/**
 * Multiple of the page size that a `since` filter reads ahead in audit_log_created to find the
 * lowest matching id. With 600,000 synthetic rows (2-core machine), the probe of 510 entries
 * for a page of 51 added about 0.2 ms to a read that took 0.3 ms.
 */
const SINCE_PROBE_PAGES = 10;

export async function listAudit(db: Kysely<Database>, query: AuditQuery) {
  let select = db.selectFrom('audit_log').selectAll();
  if (query.action !== undefined) select = select.where('action', '=', query.action);
  if (query.jobId !== undefined) select = select.where('job_id', '=', query.jobId);
  if (query.since !== undefined) {
    select = select.where('created_at', '>=', query.since);
    // The page reads down the ids and stops only when it is full. With fewer matches than the
    // limit (a `since` in the future, say) it would read back to the first row. A short read
    // of audit_log_created finds the lowest matching id to stop at instead.
    const probeRows = SINCE_PROBE_PAGES * query.limit;
    const probe = await probeSince(db, query.since, probeRows);
    if (probe.count === 0) return [];
    // NOTE: with probeRows or more matches the ids are not bounded, so a page whose matches
    // run out before it fills (the last page of a long range, a rare action) still reads
    // back to the first row.
    if (probe.count < probeRows) select = select.where('id', '>=', probe.lowestId!);
  }
  if (query.beforeId !== undefined) select = select.where('id', '<', query.beforeId);
  return select.orderBy('id', 'desc').limit(query.limit).execute();
}

/**
 * Counts the rows created at or after `since`, up to `maxRows`, and returns the lowest id
 * among those it counted. That is the lowest matching id only when the count is below
 * `maxRows`. It reads the index entries of audit_log_created, not the rows.
 */
async function probeSince(db: Kysely<Database>, since: string, maxRows: number) {
  const probe = await db
    .selectFrom((eb) =>
      eb
        .selectFrom('audit_log')
        .select('id')
        .where('created_at', '>=', since)
        .limit(maxRows)
        .as('matching'),
    )
    .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('id').as('lowest_id')])
    .executeTakeFirstOrThrow();
  return { count: Number(probe.count), lowestId: probe.lowest_id };
}
