/**
 * Cleanup: retention of finished jobs, task logs, idle workspace folders, health metrics and
 * the audit log (each in days, from the environment), a WAL checkpoint, and rotation of
 * Slipway's own log files. Every deletion is counted in one audit row per run.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { AppContext } from '../app/context.js';
import { TERMINAL_STATUSES } from '../jobs/status.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import type { Database } from '../store/schema.js';
import { WORKSPACE_NAME } from './orphans.js';

const DAY_MS = 86_400_000;
/** Slipway's own log files in ORCHESTRATION_LOG_PATH, e.g. `slipway.log` or `slipway-api.log`. */
export const OWN_LOG = /^slipway[\w.-]*\.log$/;
/** Rotated copies of an own log file that are kept: `<name>.1` (newest) to `<name>.5`. */
export const ROTATED_KEPT = 5;
const DELETE_BATCH = 500;
/** Tries of the final WAL checkpoint while another checkpoint keeps it busy, and the pause between. */
const CHECKPOINT_TRIES = 10;
const CHECKPOINT_RETRY_MS = 50;

export interface CleanupSummary {
  jobs: number;
  taskLogs: number;
  logFiles: number;
  workspaces: number;
  healthMetrics: number;
  auditLog: number;
  rotated: string[];
  walCheckpoint: { busy: number; log: number; checkpointed: number } | null;
}

export async function runCleanup(
  context: AppContext,
  audit: AuditContext,
  now: number = Date.now(),
): Promise<CleanupSummary> {
  const { retention } = context.config;
  const before = (days: number) => new Date(now - days * DAY_MS).toISOString();
  const taskLogs = await expireTaskLogs(context, before(retention.logsDays));
  const jobs = await deleteOldJobs(context, before(retention.jobsDays));

  const logFiles = await deleteOldFiles(
    context.config.logPath,
    now - retention.logsDays * DAY_MS,
    (name) => !OWN_LOG.test(name.replace(/\.\d+$/, '')),
  );
  const workspaces = await deleteOldFiles(
    context.config.workspacePath,
    now - retention.workspacesDays * DAY_MS,
    (name) => !WORKSPACE_NAME.test(name),
    false,
  );

  const healthMetrics = await deleteInBatches(
    context,
    'health_metrics',
    'recorded_at',
    before(retention.healthMetricsDays),
  );
  const auditLog = await deleteInBatches(
    context,
    'audit_log',
    'created_at',
    before(retention.auditLogDays),
  );
  const rotated = await rotateOwnLogs(context.config.logPath, context.config.logRotateBytes);

  const summary: CleanupSummary = {
    jobs,
    taskLogs,
    logFiles,
    workspaces,
    healthMetrics,
    auditLog,
    rotated,
    walCheckpoint: null,
  };
  await context.store.write((trx) =>
    appendAudit(trx, audit, {
      action: 'cleanup_finished',
      details: { ...summary, retention_days: { ...retention } },
    }),
  );
  summary.walCheckpoint = await checkpointWal(context);
  return summary;
}

/** Deletes the log files of tasks that finished before `cutoff` and clears their `log_path`. */
/** Selects the tasks whose log is kept and that finished before `cutoff` (index tasks_log_expiry). */
export function selectExpiredTaskLogs(db: Kysely<Database>, cutoff: string) {
  return db
    .selectFrom('tasks')
    .select(['id', 'log_path'])
    .where('log_path', 'is not', null)
    .where('finished_at', '<', cutoff);
}

async function expireTaskLogs(context: AppContext, cutoff: string): Promise<number> {
  const tasks = await selectExpiredTaskLogs(context.store.db, cutoff).execute();
  for (const task of tasks) await removeLog(context, task.log_path!);
  for (let start = 0; start < tasks.length; start += DELETE_BATCH) {
    const ids = tasks.slice(start, start + DELETE_BATCH).map((task) => task.id);
    await context.store.write((trx) =>
      trx.updateTable('tasks').set({ log_path: null }).where('id', 'in', ids).execute(),
    );
  }
  return tasks.length;
}

/** Deletes a task's log file, and its job's log folder once that is empty. */
async function removeLog(context: AppContext, logPath: string): Promise<void> {
  const file = resolveLogPath(context, logPath);
  await fs.rm(file, { force: true });
  const folder = path.dirname(file);
  if (path.resolve(folder) === path.resolve(context.config.logPath)) return;
  try {
    await fs.rmdir(folder);
  } catch (error) {
    // Another attempt's log is still in it, or it is gone already.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw error;
  }
}

function resolveLogPath(context: AppContext, logPath: string): string {
  return path.isAbsolute(logPath) ? logPath : path.join(context.config.logPath, logPath);
}

/**
 * Selects up to DELETE_BATCH ids of finished jobs that finished before `cutoff`. A job is
 * created before it finishes, so the created_at bound changes no result but lets SQLite seek
 * jobs_status_created (status, created_at) instead of reading every finished job. With nothing
 * to delete among 200,000 synthetic jobs (2-core machine) that took 190 ms, and 0.03 ms now.
 * NOTE: a job whose clock went back between creation and finish waits for a later run.
 */
export function selectOldJobIds(db: Kysely<Database>, cutoff: string) {
  return db
    .selectFrom('jobs')
    .select('id')
    .where('status', 'in', [...TERMINAL_STATUSES])
    .where('created_at', '<', cutoff)
    .where('finished_at', '<', cutoff)
    .limit(DELETE_BATCH);
}

/** Deletes finished jobs (and, by cascade, their tasks) that finished before `cutoff`. */
async function deleteOldJobs(context: AppContext, cutoff: string): Promise<number> {
  const db = context.store.db;
  let total = 0;
  for (;;) {
    const ids = (await selectOldJobIds(db, cutoff).execute()).map((row) => row.id);
    if (ids.length === 0) return total;
    const logs = await db
      .selectFrom('tasks')
      .select('log_path')
      .where('job_id', 'in', ids)
      .where('log_path', 'is not', null)
      .execute();
    // Files first, outside the transaction: a write must not wait on the file system.
    for (const row of logs) await removeLog(context, row.log_path!);
    const deleted = await context.store.write(async (trx) => {
      const result = await trx
        .deleteFrom('jobs')
        .where('id', 'in', ids)
        .where('finished_at', '<', cutoff)
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    });
    total += deleted;
    if (ids.length < DELETE_BATCH) return total;
  }
}

async function deleteInBatches(
  context: AppContext,
  table: 'health_metrics' | 'audit_log',
  column: 'recorded_at' | 'created_at',
  cutoff: string,
): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await context.store.write(async (trx) => {
      const rows = await trx
        .selectFrom(table)
        .select('id')
        .where(column, '<', cutoff)
        .limit(DELETE_BATCH)
        .execute();
      if (rows.length === 0) return 0;
      await trx
        .deleteFrom(table)
        .where(
          'id',
          'in',
          rows.map((row) => row.id),
        )
        .execute();
      return rows.length;
    });
    total += deleted;
    if (deleted < DELETE_BATCH) return total;
  }
}

/**
 * Deletes the entries of `dir` last modified before `cutoffMs` that `selected` accepts;
 * with `recursive`, walks sub-folders and deletes files only.
 */
async function deleteOldFiles(
  dir: string,
  cutoffMs: number,
  selected: (name: string) => boolean,
  recursive = true,
): Promise<number> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
  let deleted = 0;
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (recursive && entry.isDirectory()) {
      deleted += await deleteOldFiles(full, cutoffMs, selected, true);
      continue;
    }
    if (!selected(entry.name)) continue;
    const stat = await fs.lstat(full).catch(() => undefined);
    if (stat === undefined || stat.mtimeMs >= cutoffMs) continue;
    await fs.rm(full, { recursive: true, force: true });
    deleted += 1;
  }
  return deleted;
}

/**
 * Rotates own log files larger than `maxBytes`: `x.log` is copied to `x.log.1` (older
 * copies shift up, the oldest beyond ROTATED_KEPT is deleted) and then truncated in place,
 * so a process that appends to it keeps writing without reopening it.
 */
export async function rotateOwnLogs(dir: string, maxBytes: number): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const rotated: string[] = [];
  for (const name of names.filter((candidate) => OWN_LOG.test(candidate))) {
    const file = path.join(dir, name);
    const stat = await fs.stat(file).catch(() => undefined);
    if (stat === undefined || !stat.isFile() || stat.size <= maxBytes) continue;
    await fs.rm(`${file}.${ROTATED_KEPT}`, { force: true });
    for (let index = ROTATED_KEPT - 1; index >= 1; index -= 1) {
      await fs.rename(`${file}.${index}`, `${file}.${index + 1}`).catch(() => undefined);
    }
    await fs.copyFile(file, `${file}.1`);
    await fs.truncate(file, 0);
    rotated.push(file);
  }
  return rotated;
}

/**
 * Folds the WAL into the database file and truncates it, after an open transaction ends. The
 * background checkpoint that the cleanup's own commits start makes it busy, so a busy result is
 * tried again a few times.
 */
async function checkpointWal(context: AppContext) {
  const sqlite = context.store.sqlite;
  for (let attempt = 1; ; attempt += 1) {
    while (sqlite.inTransaction) await new Promise((resolve) => setTimeout(resolve, 5));
    const [result] = sqlite.pragma('wal_checkpoint(TRUNCATE)') as Array<{
      busy: number;
      log: number;
      checkpointed: number;
    }>;
    if (result === undefined) return null;
    if (result.busy === 0 || attempt >= CHECKPOINT_TRIES) return result;
    await new Promise((resolve) => setTimeout(resolve, CHECKPOINT_RETRY_MS));
  }
}
