/**
 * Containers and workspaces that Slipway created and no running task owns any more: left
 * behind by a worker that was killed, or by a host that restarted.
 *
 * Only containers labelled `slipway.managed=true` with this installation's
 * `slipway.instance` are considered, so other installations and other programs on the same
 * engine are never touched. A workspace is a folder under ORCHESTRATION_WORKSPACE_PATH named
 * after its task id (e.g. `ci-a1b2c3d4.1.0`); other folders there (repository mirrors) are
 * left to cleanup's retention.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { AppContext } from '../app/context.js';
import { removeTree } from '../execution/checkout.js';
import { engineCall } from '../execution/engine-calls.js';
import {
  LABEL_ATTEMPT,
  LABEL_INSTANCE,
  LABEL_JOB,
  LABEL_MANAGED,
  LABEL_TASK,
  instanceId,
} from '../jobs/labels.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { literal } from '../store/prepared.js';
import { nowIso } from '../util/time.js';
import { dockerClient, dockerStatus } from './docker.js';

/** Something created this recently may belong to a task whose claim is being committed. */
export const ORPHAN_GRACE_MS = 60_000;
/** A task's workspace folder: the task id, optionally followed by a suffix after a dot. */
export const WORKSPACE_NAME = /^([a-z][a-z0-9-]{0,62}-[0-9a-f]{8}\.\d+\.\d+)(?:[._-].*)?$/;

/** Looks up which of `ids` are running tasks, with their current lease attempt. */
async function runningTasks(context: AppContext, ids: string[]): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map();
  const rows = await context.store.db
    .selectFrom('tasks')
    .select(['id', 'attempt'])
    .where('id', 'in', ids)
    .where('status', '=', literal('running'))
    .execute();
  return new Map(rows.map((row) => [row.id, row.attempt]));
}

/**
 * Looks up which of `ids` are tasks whose steps may use their workspace: running tasks, and
 * ended tasks that keep a lease because their steps may still run (see dispatch/lease.ts).
 */
async function tasksUsingWorkspaces(context: AppContext, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await context.store.db
    .selectFrom('tasks')
    .select('id')
    .where('id', 'in', ids)
    .where((eb) =>
      eb.or([eb('status', '=', literal('running')), eb('lease_expires_at', '>', nowIso())]),
    )
    .execute();
  return new Set(rows.map((row) => row.id));
}

/**
 * Decides whether a running task owns the container: its task label must name the task and
 * its attempt label, when present, the task's current attempt. So the container of an attempt
 * whose worker was lost is an orphan even while a newer attempt of the same task runs.
 */
function isOwned(labels: Record<string, string>, running: Map<string, number>): boolean {
  const taskId = labels[LABEL_TASK];
  if (taskId === undefined) return false;
  const attempt = running.get(taskId);
  if (attempt === undefined) return false;
  const label = labels[LABEL_ATTEMPT];
  return label === undefined || label === String(attempt);
}

/** The result of removeOrphanContainers. */
export interface OrphanContainersRemoved {
  removed: number;
  /** The task and attempt of each removed container that names them. */
  attempts: Array<{ taskId: string; attempt: number }>;
  error: string | null;
}

/**
 * Removes the containers no running task owns. `lost` maps task ids to attempts whose lease
 * was just recovered. With it, only those tasks' containers are looked at, and a lost
 * attempt's container goes at once, however young. A container is created after its claim
 * is committed, so it needs no grace period.
 */
export async function removeOrphanContainers(
  context: AppContext,
  audit: AuditContext,
  now: number = Date.now(),
  lost?: ReadonlyMap<string, number>,
): Promise<OrphanContainersRemoved> {
  const docker = dockerClient(context.config);
  // A hung engine must not hold the watchdog's pass, which recovers leases.
  const timeoutMs = context.config.worker.dockerTimeoutMs;
  const instance = instanceId(context.store);
  let containers: Awaited<ReturnType<typeof docker.listContainers>>;
  try {
    containers = await engineCall("the listing of Slipway's containers", timeoutMs, (abortSignal) =>
      docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_INSTANCE}=${instance}`] },
        abortSignal,
      }),
    );
  } catch (error) {
    // An installation that runs only local steps may have no engine, and each sweep would
    // repeat the warning. A lease recovery runs often too, so both log at debug level.
    const noEngine = ['ENOENT', 'ECONNREFUSED'].includes((error as { code?: string }).code ?? '');
    const localOnly = context.config.worker.executor === 'local' && noEngine;
    const level = lost === undefined && !localOnly ? 'warn' : 'debug';
    context.logger[level]({ err: error }, 'sweep could not list containers; skipping them');
    return { removed: 0, attempts: [], error: (error as Error).message };
  }
  const running = await runningTasks(
    context,
    containers.map((container) => container.Labels[LABEL_TASK] ?? '').filter(Boolean),
  );
  let removed = 0;
  const attempts: OrphanContainersRemoved['attempts'] = [];
  for (const container of containers) {
    // The engine filtered already; checking again guards against a filter it ignored.
    if (container.Labels[LABEL_MANAGED] !== 'true') continue;
    if (container.Labels[LABEL_INSTANCE] !== instance) continue;
    const taskId = container.Labels[LABEL_TASK] ?? null;
    const lostAttempt = taskId === null ? undefined : lost?.get(taskId);
    if (lost !== undefined && lostAttempt === undefined) continue;
    if (isOwned(container.Labels, running)) continue;
    const attemptLabel = Number(container.Labels[LABEL_ATTEMPT]);
    const ofLostAttempt = lostAttempt !== undefined && attemptLabel <= lostAttempt;
    if (!ofLostAttempt && now - container.Created * 1000 < ORPHAN_GRACE_MS) continue;
    try {
      await engineCall(`the removal of container ${container.Id}`, timeoutMs, (abortSignal) =>
        docker.getContainer(container.Id).remove({ force: true, v: true, abortSignal }),
      );
    } catch (error) {
      if (dockerStatus(error) === 404) continue;
      context.logger.warn({ err: error, container: container.Id }, 'orphan container not removed');
      continue;
    }
    removed += 1;
    if (taskId !== null && Number.isInteger(attemptLabel)) {
      attempts.push({ taskId, attempt: attemptLabel });
    }
    await context.store.write((trx) =>
      appendAudit(trx, audit, {
        action: 'container_removed',
        jobId: container.Labels[LABEL_JOB] ?? null,
        taskId,
        details: {
          container_id: container.Id,
          attempt: container.Labels[LABEL_ATTEMPT] ?? null,
          name: container.Names[0] ?? null,
          state: container.State,
          reason: ofLostAttempt
            ? `the lease of attempt ${attemptLabel} expired`
            : 'no running task owns it',
        },
      }),
    );
  }
  return { removed, attempts, error: null };
}

export async function removeOrphanWorkspaces(
  context: AppContext,
  audit: AuditContext,
  now: number = Date.now(),
): Promise<number> {
  const root = context.config.workspacePath;
  let entries: string[];
  try {
    entries = await fs.readdir(root);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
  const byTask = new Map<string, string[]>();
  for (const entry of entries) {
    const taskId = WORKSPACE_NAME.exec(entry)?.[1];
    if (taskId === undefined) continue;
    byTask.set(taskId, [...(byTask.get(taskId) ?? []), entry]);
  }
  const owned = await tasksUsingWorkspaces(context, [...byTask.keys()]);
  let removed = 0;
  for (const [taskId, names] of byTask) {
    if (owned.has(taskId)) continue;
    for (const name of names) {
      const full = path.join(root, name);
      const stat = await fs.lstat(full).catch(() => undefined);
      if (stat === undefined || now - stat.mtimeMs < ORPHAN_GRACE_MS) continue;
      try {
        await removeTree(full);
      } catch (error) {
        // One workspace that cannot be removed (files of a container step that ran as root)
        // must not stop the rest of the sweep, which would then fail at every run.
        context.logger.warn(
          { err: error, workspace: full, task: taskId },
          'orphan workspace not removed; remove it by hand',
        );
        continue;
      }
      removed += 1;
      await context.store.write((trx) =>
        appendAudit(trx, audit, {
          action: 'workspace_removed',
          jobId: taskId.replace(/\.\d+\.\d+$/, ''),
          taskId,
          details: { path: full, reason: 'no running task owns it' },
        }),
      );
    }
  }
  return removed;
}
