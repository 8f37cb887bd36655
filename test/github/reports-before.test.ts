/** The query that decides whether commit status reporting is new for a repository. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasReportsBefore } from '../../src/github/status-outbox.js';
import { openStore, type Store } from '../../src/store/database.js';
import { makeTempDir } from '../support/server.js';

describe('hasReportsBefore', () => {
  let store: Store;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir(), 'reports.db'));
    const insert = store.sqlite.prepare(
      `INSERT INTO github_status_outbox
         (repository, commit_sha, context, state, description, job_id, status, next_attempt_at, created_at)
       VALUES (?, 'abc1234', 'slipway/ci', 'success', 'succeeded', 'ci-00000001', 'success', ?, ?)`,
    );
    insert.run('octo/old', '2026-12-01T10:00:00.000Z', '2026-12-01T10:00:00.000Z');
    insert.run('octo/new', '2026-12-06T03:00:00.500Z', '2026-12-06T03:00:00.500Z');
  });
  afterAll(async () => {
    await store.close();
  });

  it('counts reports written before the time', async () => {
    expect(await hasReportsBefore(store.db, 'octo/old', '2026-12-06T03:00:00.000Z')).toBe(true);
  });

  it('ignores reports written since', async () => {
    // A job that ended right after the start wrote this one, so reporting is still new.
    expect(await hasReportsBefore(store.db, 'octo/new', '2026-12-06T03:00:00.000Z')).toBe(false);
    expect(await hasReportsBefore(store.db, 'octo/new', '2026-12-06T03:00:01.000Z')).toBe(true);
  });

  it('keeps repositories apart', async () => {
    expect(await hasReportsBefore(store.db, 'octo/other', '2026-12-07T00:00:00.000Z')).toBe(false);
  });
});
