import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { makeTempDir, type TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';

const TMPFS_BYTES = 8 * 1024 * 1024;

describe('database check on a small file system', () => {
  const mountPoint = makeTempDir('slipway-tmpfs-');
  const filler = path.join(mountPoint, 'filler.bin');
  let server: TestServer;

  beforeAll(async () => {
    // A file system of its own, so filling it touches nothing else on the machine.
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES}`, 'tmpfs', mountPoint]);
    server = await startHealthServer(
      `
  - name: db
    type: database
    disk_warn: 30%
    disk_fail: 10%
  - name: db-often
    type: database
    integrity_interval: 1ms
  - name: db-bad-query
    type: database
    query: SELECT * FROM no_such_table
  - name: db-write
    type: database
    query: DELETE FROM jobs
  - name: db-small-wal
    type: database
    wal_warn: 1KiB
`,
      {},
      mountPoint,
    );
  });
  afterAll(async () => {
    await server?.close();
    execFileSync('umount', [mountPoint]);
    fs.rmSync(mountPoint, { recursive: true, force: true });
  });

  const check = async (name: string) =>
    (await runHealthChecks(server.context, { force: true, names: [name] }))[0]!;
  const details = async (name: string) => {
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    return status.body.components[name].details;
  };
  /** Fills the file system until `freeBytes` are left. */
  const leaveFree = (freeBytes: number) => {
    fs.rmSync(filler, { force: true });
    const stats = fs.statfsSync(mountPoint);
    const free = stats.bavail * stats.bsize;
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, free - freeBytes)));
  };

  it('is healthy with room to spare', async () => {
    const outcome = await check('db');
    expect(outcome.status).toBe('healthy');
    const disk = (await details('db')).disk;
    expect(disk.total_bytes).toBe(TMPFS_BYTES);
    expect(disk.free_percent).toBeGreaterThan(30);
    const wal = (await details('db')).wal;
    expect(wal.frames).toBeGreaterThan(0);
    expect(wal.checkpointed_frames).toBeLessThanOrEqual(wal.frames);
  });

  it('is degraded above wal_warn', async () => {
    // An open read keeps checkpoints from copying the frames written after it started.
    const reader = new BetterSqlite3(server.context.store.path, { readonly: true });
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM jobs').get();
    let outcome;
    try {
      await server.request('POST', '/api/trigger/ci', {
        token: server.adminToken,
        body: { commit: 'abc1234' },
      });
      outcome = await check('db-small-wal');
    } finally {
      reader.exec('COMMIT');
      reader.close();
    }

    expect(outcome.status).toBe('degraded');
    const found = await details('db-small-wal');
    expect(found.wal.bytes).toBeGreaterThan(1024);
    expect(found.wal.checkpointed_frames).toBeLessThan(found.wal.frames);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.body.components['db-small-wal'].details.reason).toContain(
      'over 1.0 KiB. A checkpoint starts it over only once no read transaction uses its frames',
    );
  });

  it('checkpoints a large WAL once the read ended', async () => {
    // The read of the test above has ended, and no write has come since to start a checkpoint.
    const before = (await details('db-small-wal')).wal;
    expect(before.checkpointed_frames).toBeLessThan(before.frames);

    const outcome = await check('db-small-wal');

    expect(outcome.status).toBe('healthy');
    const after = (await details('db-small-wal')).wal;
    expect(after.checkpointed_frames).toBe(after.frames);
  });

  it('is degraded below disk_warn', async () => {
    leaveFree(TMPFS_BYTES * 0.2);
    const outcome = await check('db');
    expect(outcome.status).toBe('degraded');
    expect(outcome.reason).toContain('below disk_warn of 30%');
  });

  it('is unhealthy below disk_fail', async () => {
    leaveFree(TMPFS_BYTES * 0.05);
    const outcome = await check('db');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('below disk_fail of 10%');
    const disk = (await details('db')).disk;
    expect(disk.free_percent).toBeLessThan(10);
  });

  it('recovers when space is freed', async () => {
    fs.rmSync(filler);
    const outcome = await check('db');
    expect(outcome.status).toBe('healthy');
  });

  it('runs quick_check on its own schedule', async () => {
    const first = (await details('db')).integrity;
    expect(first).toMatchObject({ ok: true, messages: ['ok'] });
    await check('db');
    const again = (await details('db')).integrity;
    // integrity_interval defaults to an hour, so the earlier result is reused.
    expect(again.checked_at).toBe(first.checked_at);

    await check('db-often');
    const often = (await details('db-often')).integrity.checked_at;
    await new Promise((resolve) => setTimeout(resolve, 5));
    await check('db-often');
    expect((await details('db-often')).integrity.checked_at).not.toBe(often);
  });

  it('is unhealthy when the query fails', async () => {
    const outcome = await check('db-bad-query');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('no such table: no_such_table');
  });

  it('runs the query on a read-only connection', async () => {
    await server.request('POST', '/api/trigger/deploy', {
      token: server.adminToken,
      body: { commit: 'abcdef1', branch: 'main' },
    });
    const outcome = await check('db-write');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('readonly');
    const jobs = await server.context.store.db.selectFrom('jobs').select('id').execute();
    expect(jobs).toHaveLength(1);
  });
});
