import fs from 'node:fs';
import fsPromises from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  instanceId,
  LABEL_ATTEMPT,
  LABEL_INSTANCE,
  LABEL_JOB,
  LABEL_MANAGED,
  LABEL_TASK,
} from '../../src/jobs/labels.js';
import { removeOrphanContainers, removeOrphanWorkspaces } from '../../src/orchestrator/orphans.js';
import { runSweep, timeOutUnheldTasks } from '../../src/orchestrator/sweep.js';
import { Watchdog } from '../../src/orchestrator/watchdog.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, finishJob, getJob, trigger, writePipelines } from './helpers.js';

const audit = { actor: 'orchestrator' };
const TEST_LABEL = 'slipway.test';
const OWNER = `orch-sweep-${process.pid}`;
/** Later than ORPHAN_GRACE_MS from now, so a fresh container counts as old enough. */
const LATER = Date.now() + 120_000;

describe('orchestration sweep', () => {
  let server: TestServer;
  let docker: Docker;

  beforeAll(async () => {
    docker = await requireDocker();
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
    });
  });
  afterAll(async () => {
    const mine = await docker.listContainers({
      all: true,
      filters: { label: [`${TEST_LABEL}=${OWNER}`] },
    });
    for (const info of mine) await docker.getContainer(info.Id).remove({ force: true });
    await server.close();
  });

  async function runningTask(commit: string): Promise<{ jobId: string; taskId: string }> {
    const ci = await trigger(server, 'ci', commit);
    const job = await finishJob(server, ci.job_id, 'running');
    return { jobId: ci.job_id, taskId: job.tasks[0]!.id };
  }

  async function createContainer(labels: Record<string, string>): Promise<string> {
    const container = await docker.createContainer({
      Image: TEST_IMAGE,
      Cmd: ['sleep', '300'],
      Labels: { [TEST_LABEL]: OWNER, ...labels },
    });
    return container.id;
  }

  async function exists(id: string): Promise<boolean> {
    return docker
      .getContainer(id)
      .inspect()
      .then(() => true)
      .catch(() => false);
  }

  it('removes only its own containers that no running task owns', async () => {
    const instance = instanceId(server.context.store);
    const live = await runningTask('a0a0a0a0a0');
    const done = await trigger(server, 'ci', 'a1a1a1a1a1');
    const doneJob = await finishJob(server, done.job_id, 'success');
    const mine = (taskId: string, jobId: string) => ({
      [LABEL_MANAGED]: 'true',
      [LABEL_INSTANCE]: instance,
      [LABEL_JOB]: jobId,
      [LABEL_TASK]: taskId,
    });
    const owned = await createContainer({ ...mine(live.taskId, live.jobId), [LABEL_ATTEMPT]: '0' });
    const staleAttempt = await createContainer({
      ...mine(live.taskId, live.jobId),
      [LABEL_ATTEMPT]: '7',
    });
    const orphan = await createContainer(mine(doneJob.tasks[0]!.id, done.job_id));
    const otherInstance = await createContainer({
      ...mine(doneJob.tasks[0]!.id, done.job_id),
      [LABEL_INSTANCE]: 'another-installation',
    });
    const unmanaged = await createContainer({ [LABEL_TASK]: doneJob.tasks[0]!.id });

    const early = await removeOrphanContainers(server.context, audit);
    expect(early.removed).toBe(0);
    const result = await removeOrphanContainers(server.context, audit, LATER);
    expect(result.removed).toBe(2);
    expect(result.error).toBeNull();
    // The orphan has no attempt label, so only the stale attempt is listed.
    expect(result.attempts).toEqual([{ taskId: live.taskId, attempt: 7 }]);
    expect(await exists(orphan)).toBe(false);
    expect(await exists(staleAttempt)).toBe(false);
    expect(await exists(owned)).toBe(true);
    expect(await exists(otherInstance)).toBe(true);
    expect(await exists(unmanaged)).toBe(true);
    const rows = await auditRows(server, 'container_removed');
    expect(rows.map((row) => row.details.container_id).sort()).toEqual(
      [orphan, staleAttempt].sort(),
    );
    expect(rows.find((row) => row.details.container_id === orphan)!.task_id).toBe(
      doneJob.tasks[0]!.id,
    );
  });

  it('removes a lost attempt at lease recovery', async () => {
    const instance = instanceId(server.context.store);
    const lost = await runningTask('d0d0d0d0d0');
    const other = await runningTask('d1d1d1d1d1');
    const attemptOf = async (taskId: string) =>
      (
        await server.context.store.db
          .selectFrom('tasks')
          .select('attempt')
          .where('id', '=', taskId)
          .executeTakeFirstOrThrow()
      ).attempt;
    const labelsOf = async (task: { jobId: string; taskId: string }) => ({
      [LABEL_MANAGED]: 'true',
      [LABEL_INSTANCE]: instance,
      [LABEL_JOB]: task.jobId,
      [LABEL_TASK]: task.taskId,
      [LABEL_ATTEMPT]: String(await attemptOf(task.taskId)),
    });
    const lostContainer = await createContainer(await labelsOf(lost));
    const otherContainer = await createContainer(await labelsOf(other));
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ lease_expires_at: '2000-01-01T00:00:00.000Z' })
        .where('id', '=', lost.taskId)
        .execute(),
    );

    // Younger than the sweep's grace period, and still removed at once.
    await new Watchdog(server.context).runOnce();
    expect(await exists(lostContainer)).toBe(false);
    expect(await exists(otherContainer)).toBe(true);
    const rows = await auditRows(server, 'container_removed');
    const row = rows.find((item) => item.details.container_id === lostContainer);
    expect(row?.task_id).toBe(lost.taskId);
    expect(row?.details.reason).toMatch(/^the lease of attempt \d+ expired$/);
  });

  it('removes workspaces of tasks that are not running', async () => {
    const root = server.context.config.workspacePath;
    const live = await runningTask('b0b0b0b0b0');
    fs.mkdirSync(path.join(root, live.taskId, 'src'), { recursive: true });
    fs.mkdirSync(path.join(root, 'ci-0badc0de.1.0', 'src'), { recursive: true });
    fs.mkdirSync(path.join(root, 'mirrors', 'repo.git'), { recursive: true });

    expect(await removeOrphanWorkspaces(server.context, audit)).toBe(0);
    expect(await removeOrphanWorkspaces(server.context, audit, LATER)).toBe(1);
    expect(fs.existsSync(path.join(root, 'ci-0badc0de.1.0'))).toBe(false);
    expect(fs.existsSync(path.join(root, live.taskId))).toBe(true);
    expect(fs.existsSync(path.join(root, 'mirrors', 'repo.git'))).toBe(true);
    const rows = await auditRows(server, 'workspace_removed');
    expect(rows[0]!.task_id).toBe('ci-0badc0de.1.0');
  });

  it('goes on past a workspace it cannot remove', async () => {
    const root = server.context.config.workspacePath;
    const stuck = path.join(root, 'ci-0badc0d1.1.0');
    const other = path.join(root, 'ci-0badc0d2.1.0');
    fs.mkdirSync(path.join(stuck, 'src'), { recursive: true });
    fs.mkdirSync(path.join(other, 'src'), { recursive: true });
    const realRm = fsPromises.rm.bind(fsPromises);
    // Files that a container step wrote as root, seen by a worker that is not root.
    const rm = vi.spyOn(fsPromises, 'rm').mockImplementation(async (target, options) => {
      if (target === stuck) {
        throw Object.assign(new Error(`EACCES: permission denied, scandir '${stuck}/src'`), {
          code: 'EACCES',
        });
      }
      return realRm(target, options);
    });
    try {
      expect(await removeOrphanWorkspaces(server.context, audit, LATER)).toBe(1);
    } finally {
      rm.mockRestore();
    }
    expect(fs.existsSync(other)).toBe(false);
    expect(fs.existsSync(stuck)).toBe(true);
    fs.rmSync(stuck, { recursive: true, force: true });
  });

  it('repairs a job status that disagrees with its tasks', async () => {
    const ci = await trigger(server, 'ci', 'c0c0c0c0c0');
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ status: 'success', exit_code: 0 })
        .where('job_id', '=', ci.job_id)
        .execute(),
    );
    const tests = await trigger(server, 'integration-tests', 'c0c0c0c0c0');
    expect(tests.status).toBe('waiting');

    const summary = await runSweep(server.context, audit);
    expect(summary.jobStatusesRepaired).toBe(1);
    expect((await getJob(server, ci.job_id)).status).toBe('success');
    // The repaired ci job releases the job that was waiting on it.
    expect((await getJob(server, tests.job_id)).status).toBe('queued');
    const rows = await auditRows(server, 'state_repaired', ci.job_id);
    expect(rows[0]!.details).toMatchObject({ from: 'queued', to: 'success' });
  });

  it('ends a job that has no tasks', async () => {
    const ci = await trigger(server, 'ci', 'c1c1c1c1c1');
    // A job as an older version could leave it: queued, with no task to claim.
    await server.context.store.write((trx) =>
      trx.deleteFrom('tasks').where('job_id', '=', ci.job_id).execute(),
    );
    const tests = await trigger(server, 'integration-tests', 'c1c1c1c1c1');
    expect(tests.status).toBe('waiting');

    const summary = await runSweep(server.context, audit);
    expect(summary.tasklessJobsEnded).toBe(1);
    const job = await getJob(server, ci.job_id);
    expect(job.status).toBe('error');
    expect(job.reason).toBe('attempt 1 of the job has no tasks; trigger it again');
    expect(job.finished_at).not.toBeNull();
    // The jobs waiting on it are decided as they are for any failed job.
    expect((await getJob(server, tests.job_id)).status).toBe('skipped');
    const rows = await auditRows(server, 'state_repaired', ci.job_id);
    expect(rows[0]!.details).toMatchObject({ problem: 'job has no tasks', from: 'queued' });
    expect(await auditRows(server, 'job_finished', ci.job_id)).toHaveLength(1);

    const again = await runSweep(server.context, audit);
    expect(again.tasklessJobsEnded).toBe(0);
  });

  it('ends an active task of a finished job', async () => {
    const ci = await trigger(server, 'ci', 'd0d0d0d0d0');
    await server.context.store.write((trx) =>
      trx.updateTable('jobs').set({ status: 'cancelled' }).where('id', '=', ci.job_id).execute(),
    );
    const summary = await runSweep(server.context, audit);
    expect(summary.strayTasksEnded).toBe(1);
    const job = await getJob(server, ci.job_id);
    expect(job.tasks[0]?.status).toBe('error');
    expect(job.tasks[0]?.reason).toBe('the job already ended cancelled');
  });

  it('times out a running task that no worker holds', async () => {
    const ci = await trigger(server, 'ci', 'e0e0e0e0e0');
    await finishJob(server, ci.job_id, 'running');
    const startedAt = Date.parse((await getJob(server, ci.job_id)).tasks[0]!.started_at!);
    // The default pipeline timeout is 1 h. Tasks that earlier tests left running without a
    // worker may end too, so only this job's task is checked.
    await timeOutUnheldTasks(server.context, audit, startedAt + 3_599_000);
    expect((await getJob(server, ci.job_id)).tasks[0]?.status).toBe('running');
    expect(
      await timeOutUnheldTasks(server.context, audit, startedAt + 3_601_000),
    ).toBeGreaterThanOrEqual(1);

    const job = await getJob(server, ci.job_id);
    expect(job.status).toBe('timed_out');
    expect(job.tasks[0]?.status).toBe('timed_out');
    expect(job.tasks[0]?.reason).toContain('no worker holds this task and its timeout of 3600s');
    const repaired = await auditRows(server, 'state_repaired', ci.job_id);
    expect(repaired.map((row) => row.details.problem)).toEqual(['running task without a worker']);
  });

  it('times out unheld tasks of snapshots without a timeout', async () => {
    const ci = await trigger(server, 'ci', 'e1e1e1e1e1');
    await finishJob(server, ci.job_id, 'running');
    // A job stored before timeouts were kept in its pipeline snapshot ran with the default 1 h.
    const stored = await server.context.store.db
      .selectFrom('jobs')
      .select('pipeline')
      .where('id', '=', ci.job_id)
      .executeTakeFirstOrThrow();
    const snapshot = JSON.parse(stored.pipeline) as Record<string, unknown>;
    delete snapshot.timeoutMs;
    await server.context.store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ pipeline: JSON.stringify(snapshot) })
        .where('id', '=', ci.job_id)
        .execute(),
    );
    const startedAt = Date.parse((await getJob(server, ci.job_id)).tasks[0]!.started_at!);
    await timeOutUnheldTasks(server.context, audit, startedAt + 3_599_000);
    expect((await getJob(server, ci.job_id)).tasks[0]?.status).toBe('running');
    await timeOutUnheldTasks(server.context, audit, startedAt + 3_601_000);
    const job = await getJob(server, ci.job_id);
    expect(job.status).toBe('timed_out');
    expect(job.tasks[0]?.reason).toContain('its timeout of 3600s');
  });

  it('sets LAST_DEPLOYED_COMMIT from the last successful deploy', async () => {
    const rollback = await trigger(server, 'rollback', 'e0e0e0e0e0');
    await finishJob(server, rollback.job_id, 'success');
    await server.context.store.write((trx) =>
      trx
        .updateTable('state_variables')
        .set({ value: 'ffffffffff' })
        .where('name', '=', 'LAST_DEPLOYED_COMMIT')
        .execute(),
    );
    const summary = await runSweep(server.context, audit);
    expect(summary.deployStateRepaired).toBe(true);
    const state = await server.request('GET', '/api/state', { token: server.adminToken });
    expect(state.body.variables.LAST_DEPLOYED_COMMIT).toBe('e0e0e0e0e0');
    const rows = await auditRows(server, 'state_repaired', rollback.job_id);
    expect(rows[0]!.details).toMatchObject({ from: 'ffffffffff', to: 'e0e0e0e0e0' });
    expect((await runSweep(server.context, audit)).deployStateRepaired).toBe(false);
  });

  it('records why a queued job has no worker', async () => {
    const ci = await trigger(server, 'ci', 'f1f1f1f1f1');
    await server.context.store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ queued_at: new Date(Date.now() - 60_000).toISOString() })
        .where('id', '=', ci.job_id)
        .execute(),
    );
    const summary = await runSweep(server.context, audit);
    expect(summary.queuedWithoutWorker).toBeGreaterThanOrEqual(1);
    const rows = await auditRows(server, 'job_unschedulable', ci.job_id);
    expect(rows[0]!.details.reason).toBe('no worker is online');

    const registered = await server.request('POST', '/api/agent/workers', {
      token: await server.token('agent'),
      body: { name: 'sweep-worker', hostname: 'test-host', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBeLessThan(300);
    await runSweep(server.context, audit);
    const cleared = await auditRows(server, 'job_schedulable', ci.job_id);
    expect(cleared[0]!.details.previous_reason).toBe('no worker is online');
    const stored = await server.context.store.db
      .selectFrom('jobs')
      .select('reason')
      .where('id', '=', ci.job_id)
      .executeTakeFirstOrThrow();
    expect(stored.reason).toBeNull();
  });
});
