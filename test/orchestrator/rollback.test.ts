/** The rollback target: the latest successful deploy or rollback, found through an index. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectLastSuccessfulDeploy } from '../../src/orchestrator/rollback.js';
import { openStore, type Store } from '../../src/store/database.js';
import type { Status } from '../../src/jobs/status.js';
import { queryPlan } from '../support/plan.js';
import { makeTempDir } from '../support/server.js';

describe('last successful deploy', () => {
  let store: Store;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir(), 'rollback.db'));
  });
  afterAll(async () => {
    await store.close();
  });

  const insertJob = (
    id: string,
    type: string,
    status: Status,
    commit: string | null,
    finishedAt: string,
  ) =>
    store.write(async (trx) => {
      await trx
        .insertInto('jobs')
        .values({
          id,
          type,
          status,
          commit_sha: commit,
          branch: 'main',
          params: '{}',
          github_run_id: null,
          github_run_attempt: null,
          idempotency_key: null,
          request_hash: null,
          attempt: 1,
          reason: null,
          requested_by: null,
          concurrency_group: null,
          pipeline: '{}',
          created_at: '2026-01-01T00:00:00.000Z',
          queued_at: null,
          started_at: null,
          finished_at: finishedAt,
          updated_at: finishedAt,
        })
        .execute();
    });

  const lastId = async (exceptCommit: string | null) =>
    (await selectLastSuccessfulDeploy(store.db, exceptCommit).executeTakeFirst())?.id;

  it('is undefined without a successful deploy', async () => {
    await insertJob('deploy-00000001', 'deploy', 'failure', 'aaaa', '2026-01-02T00:00:00.000Z');
    expect(await lastId(null)).toBeUndefined();
  });

  it('orders by finish time, then id', async () => {
    await insertJob('deploy-00000002', 'deploy', 'success', 'aaaa', '2026-01-02T00:00:01.000Z');
    await insertJob('rollback-00000003', 'rollback', 'success', 'bbbb', '2026-01-02T00:00:03.000Z');
    await insertJob('deploy-00000004', 'deploy', 'success', 'cccc', '2026-01-02T00:00:02.000Z');
    await insertJob('deploy-00000005', 'deploy', 'success', 'dddd', '2026-01-02T00:00:03.000Z');
    // Newer, but not a successful deploy with a commit.
    await insertJob('deploy-00000006', 'deploy', 'failure', 'eeee', '2026-01-02T00:00:09.000Z');
    await insertJob('ci-00000007', 'ci', 'success', 'ffff', '2026-01-02T00:00:09.000Z');
    await insertJob('deploy-00000008', 'deploy', 'success', null, '2026-01-02T00:00:09.000Z');

    // rollback-00000003 and deploy-00000005 finished at the same time, so the greater id wins.
    expect(await lastId(null)).toBe('rollback-00000003');
    expect(await lastId('bbbb')).toBe('deploy-00000005');
    expect(await lastId('dddd')).toBe('rollback-00000003');
    expect(await lastId('zzzz')).toBe('rollback-00000003');
  });

  it('skips every deploy of the excepted commit', async () => {
    await insertJob('deploy-00000009', 'deploy', 'success', 'cccc', '2026-01-02T00:00:04.000Z');
    expect(await lastId(null)).toBe('deploy-00000009');
    expect(await lastId('cccc')).toBe('rollback-00000003');
  });

  it('seeks each deploy type in an index', () => {
    for (const exceptCommit of [null, 'cccc']) {
      const query = selectLastSuccessfulDeploy(store.db, exceptCommit).compile();
      const plan = store.read((sqlite) => queryPlan(sqlite, query.sql, query.parameters));
      expect(plan).toMatch(
        /SEARCH jobs USING INDEX jobs_type_status_finished \(type=\? AND status=\?\)/,
      );
      expect(plan).not.toMatch(/SCAN jobs/);
      // The LIMIT lets SQLite stop after the newest row of each type instead of sorting all.
      expect(query.sql).toMatch(/ limit \?$/);
    }
  });
});
