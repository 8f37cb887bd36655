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
}

export interface AuditEntry {
  action: string;
  jobId?: string | null | undefined;
  taskId?: string | null | undefined;
  details?: Record<string, unknown> | undefined;
}

type AuditRow = Required<Omit<Insertable<AuditLogTable>, 'id'>>;

function auditRow(context: AuditContext, entry: AuditEntry): AuditRow {
  return {
    action: entry.action,
    actor: context.actor,
    job_id: entry.jobId ?? null,
    task_id: entry.taskId ?? null,
    request_id: context.requestId ?? null,
    source: context.source ?? null,
    details: JSON.stringify(entry.details ?? {}),
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

export async function listAudit(db: Kysely<Database>, query: AuditQuery) {
  let select = db.selectFrom('audit_log').selectAll();
  if (query.action !== undefined) select = select.where('action', '=', query.action);
  if (query.jobId !== undefined) select = select.where('job_id', '=', query.jobId);
  if (query.since !== undefined) select = select.where('created_at', '>=', query.since);
  if (query.beforeId !== undefined) select = select.where('id', '<', query.beforeId);
  return select.orderBy('id', 'desc').limit(query.limit).execute();
}
