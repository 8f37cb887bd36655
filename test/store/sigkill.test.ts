/**
 * A 201 promises that the job is committed. This kills `slipway api` with SIGKILL in the
 * middle of a burst of triggers and checks that every job it answered 201 for is in the
 * database afterwards. SIGKILL loses only what the process held in memory. It does not test
 * power loss, which synchronous=FULL covers by syncing the WAL at each commit.
 */
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, startApiProcess } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_sigkill-admin-token-0000000000000001';
const CONCURRENCY = 32;
/** Kill after this many 201 responses, so the kill lands mid-burst. */
const KILL_AFTER = 300;

describe('SIGKILL during a burst of triggers', () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-sigkill-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('loses none of the jobs answered 201', async () => {
    const env = { SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN };
    const api = await startApiProcess(env);
    const acknowledged: string[] = [];
    let failedInFlight = 0;
    let killed = false;
    let killing: Promise<void> | undefined;

    const lanes = Array.from({ length: CONCURRENCY }, async (_, lane) => {
      for (let index = 0; !killed; index += 1) {
        try {
          const response = await fetch(`${api.url}/api/trigger/recovery`, {
            method: 'POST',
            headers: {
              authorization: `Bearer ${ADMIN_TOKEN}`,
              'content-type': 'application/json',
            },
            body: JSON.stringify({ commit: 'abc1234', params: { lane, index } }),
          });
          const text = await response.text();
          // A 201 that arrived whole is a promise the database must keep.
          if (response.status === 201) acknowledged.push(JSON.parse(text).job_id);
          else throw new Error(`unexpected ${response.status}: ${text}`);
        } catch (error) {
          if (!killed) throw error;
          failedInFlight += 1;
        }
        if (acknowledged.length >= KILL_AFTER && killing === undefined) {
          killed = true;
          killing = api.kill();
        }
      }
    });
    await Promise.all(lanes);
    await killing;
    expect(api.child.signalCode).toBe('SIGKILL');
    expect(acknowledged.length).toBeGreaterThanOrEqual(KILL_AFTER);

    const sqlite = new BetterSqlite3(path.join(dataDir, 'state', 'orchestration.db'));
    try {
      expect(sqlite.pragma('integrity_check', { simple: true })).toBe('ok');
      const stored = new Set(
        (sqlite.prepare('SELECT id FROM jobs').all() as Array<{ id: string }>).map((row) => row.id),
      );
      const missing = acknowledged.filter((id) => !stored.has(id));
      expect(missing).toEqual([]);
      // Requests cut off by the kill may or may not have committed; none may exist twice.
      expect(stored.size).toBeGreaterThanOrEqual(acknowledged.length);
      expect(stored.size).toBeLessThanOrEqual(acknowledged.length + failedInFlight);
      const tasks = sqlite
        .prepare('SELECT count(*) AS n FROM jobs WHERE id NOT IN (SELECT job_id FROM tasks)')
        .get() as { n: number };
      expect(tasks.n).toBe(0);
    } finally {
      sqlite.close();
    }

    // A restarted API serves the jobs.
    const restarted = await startApiProcess(env);
    try {
      for (const id of [acknowledged[0]!, acknowledged.at(-1)!]) {
        const response = await fetch(`${restarted.url}/api/job/${id}`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        });
        expect(response.status).toBe(200);
      }
    } finally {
      await restarted.stop();
    }
  }, 120_000);
});
