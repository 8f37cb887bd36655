import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkIntegrity, runScheduledBackup } from '../../src/orchestrator/backup.js';
import {
  rotateOwnLogs,
  runCleanup,
  selectExpiredTaskLogs,
  selectOldJobIds,
} from '../../src/orchestrator/cleanup.js';
import { queryPlan } from '../support/plan.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, finishJob, trigger, writePipelines } from './helpers.js';

const DAY = 86_400_000;
const audit = { actor: 'orchestrator' };

function daysAgo(days: number): string {
  return new Date(Date.now() - days * DAY).toISOString();
}

function touchOld(file: string, days: number): void {
  const when = new Date(Date.now() - days * DAY);
  fs.utimesSync(file, when, when);
}

describe('cleanup', () => {
  let server: TestServer;
  beforeAll(async () => {
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
      RETENTION_JOBS_DAYS: '10',
      RETENTION_LOGS_DAYS: '5',
      RETENTION_WORKSPACES_DAYS: '2',
      RETENTION_HEALTH_METRICS_DAYS: '3',
      RETENTION_AUDIT_LOG_DAYS: '20',
      SLIPWAY_LOG_ROTATE_BYTES: '1024',
      BACKUP_KEEP: '2',
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it('applies each retention and keeps what is newer', async () => {
    const { config, store } = server.context;
    const old = await trigger(server, 'ci', 'a0a0a0a0a0');
    await finishJob(server, old.job_id, 'success');
    const recent = await trigger(server, 'ci', 'a1a1a1a1a1');
    await finishJob(server, recent.job_id, 'success');
    const active = await trigger(server, 'ci', 'a2a2a2a2a2');

    fs.mkdirSync(path.join(config.logPath, 'tasks'), { recursive: true });
    const oldLog = path.join(config.logPath, 'tasks', 'old.log');
    const recentLog = path.join(config.logPath, 'tasks', 'recent.log');
    fs.writeFileSync(oldLog, 'old output');
    fs.writeFileSync(recentLog, 'recent output');
    await store.write(async (trx) => {
      await trx
        .updateTable('jobs')
        .set({ created_at: daysAgo(12), finished_at: daysAgo(11) })
        .where('id', '=', old.job_id)
        .execute();
      await trx
        .updateTable('jobs')
        .set({ finished_at: daysAgo(6) })
        .where('id', '=', recent.job_id)
        .execute();
      await trx
        .updateTable('tasks')
        .set({ finished_at: daysAgo(6), log_path: recentLog })
        .where('job_id', '=', recent.job_id)
        .execute();
      await trx
        .updateTable('tasks')
        .set({ log_path: oldLog })
        .where('job_id', '=', old.job_id)
        .execute();
      await trx
        .insertInto('health_metrics')
        .values([
          {
            component: 'db',
            status: 'healthy',
            latency_ms: 1,
            details: '{}',
            recorded_at: daysAgo(4),
          },
          {
            component: 'db',
            status: 'healthy',
            latency_ms: 1,
            details: '{}',
            recorded_at: daysAgo(1),
          },
        ])
        .execute();
      await trx
        .insertInto('audit_log')
        .values({ action: 'ancient', actor: 'test', details: '{}', created_at: daysAgo(21) })
        .execute();
    });
    const strayLog = path.join(config.logPath, 'tasks', 'stray.log');
    fs.writeFileSync(strayLog, 'no task refers to this');
    touchOld(strayLog, 6);
    fs.mkdirSync(path.join(config.workspacePath, 'mirrors'), { recursive: true });
    fs.mkdirSync(path.join(config.workspacePath, 'fresh-cache'), { recursive: true });
    touchOld(path.join(config.workspacePath, 'mirrors'), 3);

    const summary = await runCleanup(server.context, audit);
    expect(summary).toMatchObject({
      jobs: 1,
      taskLogs: 1,
      logFiles: 1,
      workspaces: 1,
      healthMetrics: 1,
      auditLog: 1,
    });
    expect(summary.walCheckpoint?.busy).toBe(0);

    const jobs = await store.db.selectFrom('jobs').select('id').execute();
    const ids = jobs.map((job) => job.id);
    expect(ids).not.toContain(old.job_id);
    expect(ids).toContain(recent.job_id);
    expect(ids).toContain(active.job_id);
    const tasks = await store.db
      .selectFrom('tasks')
      .select('job_id')
      .where('job_id', '=', old.job_id)
      .execute();
    expect(tasks).toEqual([]);
    expect(fs.existsSync(oldLog)).toBe(false);
    expect(fs.existsSync(recentLog)).toBe(false);
    expect(fs.existsSync(strayLog)).toBe(false);
    expect(fs.existsSync(path.join(config.workspacePath, 'mirrors'))).toBe(false);
    expect(fs.existsSync(path.join(config.workspacePath, 'fresh-cache'))).toBe(true);
    const metrics = await store.db.selectFrom('health_metrics').select('recorded_at').execute();
    expect(metrics).toHaveLength(1);
    expect(await auditRows(server, 'ancient')).toEqual([]);
    const finished = await auditRows(server, 'cleanup_finished');
    expect(finished[0]!.details).toMatchObject({ jobs: 1, healthMetrics: 1 });
  });

  it('says why a deleted log is empty', async () => {
    const { config, store } = server.context;
    const expired = await trigger(server, 'ci', 'a3a3a3a3a3');
    await finishJob(server, expired.job_id, 'success');
    const removed = await trigger(server, 'ci', 'a4a4a4a4a4');
    await finishJob(server, removed.job_id, 'success');
    const logOf = (jobId: string) => path.join(config.logPath, jobId, `${jobId}.1.0-1.log`);
    for (const jobId of [expired.job_id, removed.job_id]) {
      fs.mkdirSync(path.dirname(logOf(jobId)), { recursive: true });
      fs.writeFileSync(logOf(jobId), 'output');
      await store.write((trx) =>
        trx
          .updateTable('tasks')
          .set({ log_path: logOf(jobId), attempt: 1, finished_at: daysAgo(6) })
          .where('job_id', '=', jobId)
          .execute(),
      );
    }
    await store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ created_at: daysAgo(12), finished_at: daysAgo(11) })
        .where('id', '=', removed.job_id)
        .execute(),
    );

    await runCleanup(server.context, audit);

    // The deleted job's folder is removed, and the expired log's read explains what happened.
    expect(fs.existsSync(path.dirname(logOf(removed.job_id)))).toBe(false);
    expect(fs.existsSync(path.dirname(logOf(expired.job_id)))).toBe(false);
    const logs = await server.request('GET', `/api/job/${expired.job_id}/logs`, {
      token: server.adminToken,
    });
    expect(logs.status).toBe(200);
    expect(logs.text).toBe(
      '[slipway] this log was deleted by log retention (RETENTION_LOGS_DAYS, now 5)\n',
    );
  });

  it('seeks old jobs by creation time', () => {
    const { sql, parameters } = selectOldJobIds(server.context.store.db, daysAgo(10)).compile();
    const plan = server.context.store.read((sqlite) => queryPlan(sqlite, sql, parameters));
    expect(plan).toMatch(
      /SEARCH jobs USING INDEX jobs_status_created \(status=\? AND created_at<\?\)/,
    );
  });

  it('seeks expired task logs by finish time', () => {
    const query = selectExpiredTaskLogs(server.context.store.db, daysAgo(10)).compile();
    const plan = server.context.store.read((sqlite) =>
      queryPlan(sqlite, query.sql, query.parameters),
    );
    expect(plan).toMatch(/SEARCH tasks USING INDEX tasks_log_expiry \(finished_at<\?\)/);
  });

  it('rotates own log files above the size limit', async () => {
    const dir = server.context.config.logPath;
    const file = path.join(dir, 'slipway-api.log');
    fs.writeFileSync(file, 'x'.repeat(2048));
    fs.writeFileSync(`${file}.1`, 'previous');
    fs.writeFileSync(path.join(dir, 'slipway-small.log'), 'small');

    expect(await rotateOwnLogs(dir, 1024)).toEqual([file]);
    expect(fs.statSync(file).size).toBe(0);
    expect(fs.readFileSync(`${file}.1`, 'utf8')).toHaveLength(2048);
    expect(fs.readFileSync(`${file}.2`, 'utf8')).toBe('previous');
    expect(fs.readFileSync(path.join(dir, 'slipway-small.log'), 'utf8')).toBe('small');
  });

  it('keeps the newest scheduled backups', async () => {
    const made: string[] = [];
    for (let index = 0; index < 3; index += 1) {
      const result = await runScheduledBackup(server.context, audit);
      made.push(String(result.path));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const kept = fs.readdirSync(server.context.config.backupPath).sort();
    expect(kept).toEqual(made.slice(1).map((file) => path.basename(file)));
    for (const file of made.slice(1)) expect(checkIntegrity(file)).toBe('ok');
    const rows = await auditRows(server, 'backup_created');
    expect(rows).toHaveLength(3);
  });
});
