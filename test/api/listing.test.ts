import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../src/store/audit.js';
import { listJobsQuery } from '../../src/store/jobs.js';
import { plansOf, queryPlan } from '../support/plan.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface Created {
  id: string;
  type: string;
  branch: string;
  commit: string;
}

/** Writes the instant `iso` as local time at a UTC offset of `hours`, e.g. `...T14:00:00.000+02:00`. */
function withOffset(iso: string, hours: number): string {
  const local = new Date(Date.parse(iso) + hours * 3_600_000).toISOString();
  return `${local.slice(0, 23)}+${String(hours).padStart(2, '0')}:00`;
}

describe('admin listings', () => {
  let server: TestServer;
  let admin: string;
  const created: Created[] = [];

  const list = (query: string) =>
    server.request('GET', `/api/admin/jobs${query}`, { token: admin });
  const audit = (query: string) =>
    server.request('GET', `/api/admin/audit-log${query}`, { token: admin });

  /** Follows next_cursor until the last page; returns the ids of every page in order. */
  async function pageThrough(base: string, limit: number): Promise<string[][]> {
    const pages: string[][] = [];
    let cursor: string | null = null;
    do {
      const separator = base.includes('?') ? '&' : '?';
      const query: string =
        `${base}${separator}limit=${limit}` +
        (cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`);
      const page = await list(query);
      expect(page.status).toBe(200);
      expect(page.body.count).toBe(page.body.jobs.length);
      pages.push(page.body.jobs.map((job: { id: string }) => job.id));
      cursor = page.body.next_cursor;
    } while (cursor !== null && pages.length < 100);
    return pages;
  }

  beforeAll(async () => {
    server = await startTestServer();
    admin = server.adminToken;
    // Types without cancel-in-progress, so every job stays queued or waiting.
    const plan: Array<[string, string, string]> = [];
    for (let index = 0; index < 12; index += 1) {
      const type = ['recovery', 'integration-tests', 'ci'][index % 3]!;
      const branch = index % 2 === 0 ? 'main' : 'feature/ünï';
      const commit = `${index % 4}`.repeat(7) + 'abc';
      plan.push([type, branch, commit]);
    }
    for (const [type, branch, commit] of plan) {
      // ci cancels older ci jobs of the same branch; a branch per ci job avoids that.
      const jobBranch = type === 'ci' ? `${branch}-${created.length}` : branch;
      const response = await server.request('POST', `/api/trigger/${type}`, {
        token: admin,
        body: { commit, branch: jobBranch },
      });
      expect(response.status).toBe(201);
      created.push({ id: response.body.job_id, type, branch: jobBranch, commit });
    }
  });
  afterAll(async () => {
    await server.close();
  });

  it('lists newest first with the default limit', async () => {
    const page = await list('');
    expect(page.status).toBe(200);
    expect(page.body.count).toBe(12);
    expect(page.body.next_cursor).toBeNull();
    const ids = page.body.jobs.map((job: { id: string }) => job.id);
    expect(ids).toEqual([...created].reverse().map((job) => job.id));
    expect(page.body.jobs[0]).not.toHaveProperty('tasks');
    expect(page.body.jobs[0].links.self).toBe(`/api/job/${ids[0]}`);
  });

  it('cursor paging visits every job once', async () => {
    const pages = await pageThrough('', 5);
    expect(pages.map((page) => page.length)).toEqual([5, 5, 2]);
    const all = pages.flat();
    expect(new Set(all).size).toBe(12);
    expect(all).toEqual([...created].reverse().map((job) => job.id));
  });

  it('page size equal to the total has no next page', async () => {
    const pages = await pageThrough('', 12);
    expect(pages).toHaveLength(1);
    expect(pages[0]).toHaveLength(12);
  });

  it('cursor paging keeps working when jobs share a timestamp', async () => {
    const stamp = '2020-01-01T00:00:00.000Z';
    await server.context.store.write((trx) =>
      trx.updateTable('jobs').set({ created_at: stamp }).where('type', '=', 'recovery').execute(),
    );
    try {
      const pages = await pageThrough('?type=recovery', 1);
      const all = pages.flat();
      expect(all).toHaveLength(4);
      expect(new Set(all).size).toBe(4);
      expect([...all].sort().reverse()).toEqual(all);
    } finally {
      // Restore the creation order the other tests rely on.
      for (const job of created.filter((item) => item.type === 'recovery')) {
        const row = await server.context.store.db
          .selectFrom('audit_log')
          .select('created_at')
          .where('job_id', '=', job.id)
          .where('action', '=', 'job_triggered')
          .executeTakeFirstOrThrow();
        await server.context.store.write((trx) =>
          trx
            .updateTable('jobs')
            .set({ created_at: row.created_at })
            .where('id', '=', job.id)
            .execute(),
        );
      }
    }
  });

  it('filters by type', async () => {
    const page = await list('?type=integration-tests');
    const expected = created.filter((job) => job.type === 'integration-tests');
    expect(page.body.jobs.map((job: { id: string }) => job.id).sort()).toEqual(
      expected.map((job) => job.id).sort(),
    );
    expect(page.body.jobs.every((job: { type: string }) => job.type === 'integration-tests')).toBe(
      true,
    );
  });

  it('filters by status', async () => {
    const waiting = await list('?status=waiting');
    // Only integration-tests jobs wait: no ci job of their commit has succeeded.
    const expected = created.filter((job) => job.type === 'integration-tests');
    expect(waiting.body.count).toBe(expected.length);
    expect(waiting.body.jobs.every((job: { status: string }) => job.status === 'waiting')).toBe(
      true,
    );
    const success = await list('?status=success');
    expect(success.body.count).toBe(0);
  });

  it('filters by branch, including unicode and slashes', async () => {
    const page = await list(`?branch=${encodeURIComponent('feature/ünï')}`);
    const expected = created.filter((job) => job.branch === 'feature/ünï');
    expect(expected.length).toBeGreaterThan(0);
    expect(page.body.count).toBe(expected.length);
    expect(page.body.jobs.every((job: { branch: string }) => job.branch === 'feature/ünï')).toBe(
      true,
    );
  });

  it('filters by commit prefix, case-insensitively', async () => {
    const full = await list('?commit=1111111abc');
    const expected = created.filter((job) => job.commit === '1111111abc');
    expect(full.body.count).toBe(expected.length);
    const prefix = await list('?commit=1111');
    expect(prefix.body.count).toBe(expected.length);
    const upper = await list('?commit=1111111ABC');
    expect(upper.body.count).toBe(expected.length);
  });

  it('combines a commit prefix with other filters', async () => {
    const expected = created
      .filter((job) => job.commit === '2222222abc' && job.branch === 'main')
      .reverse()
      .map((job) => job.id);
    expect(expected.length).toBeGreaterThan(1);
    const page = await list('?commit=2222&branch=main');
    expect(page.body.jobs.map((job: { id: string }) => job.id)).toEqual(expected);

    // The prefix is a range on an index of commit_sha, whatever else is filtered.
    for (const filters of [{}, { status: 'queued' as const }, { type: 'ci' }, { branch: 'main' }]) {
      const query = listJobsQuery(server.context.store.db, {
        ...filters,
        commit: '2222',
        limit: 50,
      }).compile();
      const plan = server.context.store.read((sqlite) =>
        queryPlan(sqlite, query.sql, query.parameters),
      );
      expect(plan).toMatch(/USING INDEX jobs_commit_\w+ \(commit_sha>\? AND commit_sha<\?\)/);
    }
  });

  it('combines filters and pages through the result', async () => {
    const expected = created
      .filter((job) => job.branch === 'main' && job.type === 'recovery')
      .reverse()
      .map((job) => job.id);
    expect(expected.length).toBeGreaterThan(1);
    const pages = await pageThrough('?branch=main&type=recovery&status=queued', 1);
    expect(pages.flat()).toEqual(expected);
  });

  it('cursor with other filters is rejected', async () => {
    const first = await list('?branch=main&type=recovery&status=queued&limit=1');
    const cursor = encodeURIComponent(first.body.next_cursor as string);
    expect(first.body.next_cursor).not.toBeNull();
    const changed = [
      '?branch=feature%2F%C3%BCn%C3%AF&type=recovery&status=queued',
      '?branch=main&type=integration-tests&status=queued',
      '?branch=main&type=recovery&status=waiting',
      '?branch=main&type=recovery&status=queued&commit=0000',
      '?branch=main&type=recovery',
      '',
    ];
    for (const filters of changed) {
      const separator = filters === '' ? '?' : '&';
      const response = await list(`${filters}${separator}limit=1&cursor=${cursor}`);
      expect(response.status, filters).toBe(400);
      expect(response.body.code, filters).toBe('validation_failed');
      expect(response.body.field, filters).toBe('cursor');
      expect(response.body.rule, filters).toBe('sameFilters');
      expect(response.body.error, filters).toContain('cursor was issued for other filters');
    }
  });

  it('cursor keeps working with another limit', async () => {
    const first = await list('?branch=main&type=recovery&status=queued&limit=1');
    const cursor = encodeURIComponent(first.body.next_cursor as string);
    const next = await list(`?status=queued&type=recovery&branch=main&limit=5&cursor=${cursor}`);
    expect(next.status).toBe(200);
    expect(next.body.jobs[0].id).not.toBe(first.body.jobs[0].id);
  });

  it('cursor accepts the commit prefix in either case', async () => {
    const first = await list('?commit=2222222ab&limit=1');
    expect(first.body.next_cursor).not.toBeNull();
    const cursor = encodeURIComponent(first.body.next_cursor as string);
    const next = await list(`?commit=2222222AB&limit=1&cursor=${cursor}`);
    expect(next.status).toBe(200);
    expect(next.body.jobs[0].id).not.toBe(first.body.jobs[0].id);
  });

  it('cursor of the old format is rejected', async () => {
    const job = created[0]!;
    const row = await server.context.store.db
      .selectFrom('jobs')
      .select('created_at')
      .where('id', '=', job.id)
      .executeTakeFirstOrThrow();
    // Cursors of earlier versions held only the position.
    const unbound = Buffer.from(JSON.stringify([row.created_at, job.id])).toString('base64url');
    const response = await list(`?cursor=${unbound}`);
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('cursor');
    expect(response.body.rule).toBe('format');
  });

  it('audit log pages newest first without gaps', async () => {
    const first = await audit('?limit=5');
    expect(first.status).toBe(200);
    expect(first.body.count).toBe(5);
    const ids: number[] = first.body.entries.map((entry: { id: number }) => entry.id);
    let cursor = first.body.next_cursor as string | null;
    while (cursor !== null) {
      const next = await audit(`?limit=5&cursor=${cursor}`);
      expect(next.status).toBe(200);
      ids.push(...next.body.entries.map((entry: { id: number }) => entry.id));
      cursor = next.body.next_cursor;
    }
    const total = await server.context.store.db
      .selectFrom('audit_log')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .executeTakeFirstOrThrow();
    expect(ids).toHaveLength(Number(total.count));
    expect([...ids].sort((a, b) => b - a)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('audit log filters by action and job_id', async () => {
    const job = created[4]!;
    const byJob = await audit(`?job_id=${job.id}`);
    expect(byJob.status).toBe(200);
    expect(byJob.body.count).toBe(1);
    expect(byJob.body.entries[0]).toMatchObject({
      action: 'job_triggered',
      actor: 'admin',
      job_id: job.id,
      source: '127.0.0.1',
    });
    expect(byJob.body.entries[0].details).toMatchObject({
      type: job.type,
      commit: job.commit,
      branch: job.branch,
    });

    const byAction = await audit('?action=job_triggered&limit=1000');
    expect(byAction.body.count).toBe(created.length);
    const none = await audit('?action=job_cancelled');
    expect(none.body.count).toBe(0);
  });

  it('audit log filters by since', async () => {
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .select(['id', 'created_at'])
      .orderBy('id')
      .execute();
    const middle = rows[6]!;
    const expected = rows.filter((row) => row.created_at >= middle.created_at).length;
    const since = await audit(`?since=${encodeURIComponent(middle.created_at)}&limit=1000`);
    expect(since.status).toBe(200);
    expect(since.body.count).toBe(expected);
    expect(since.body.entries.at(-1).created_at >= middle.created_at).toBe(true);

    // The same instant written with a +02:00 offset selects the same rows.
    const shifted = await audit(
      `?since=${encodeURIComponent(withOffset(middle.created_at, 2))}&limit=1000`,
    );
    expect(shifted.status).toBe(200);
    expect(shifted.body.count).toBe(expected);

    const future = await audit('?since=2999-01-01T00:00:00Z');
    expect(future.body.count).toBe(0);
  });

  it('audit log since matches a full read', async () => {
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .orderBy('id', 'desc')
      .execute();
    expect(rows.length).toBeGreaterThan(12);
    const times = rows.map((row) => row.created_at).sort();
    // With limit 1 the probe reads 10 entries, fewer than match, so the walk has no bound.
    const cases = [
      { since: times[0]!, limit: 1 },
      { since: times[0]!, limit: 5 },
      { since: times.at(-3)!, limit: 5 },
      { since: times.at(-3)!, limit: 2 },
      { since: times.at(-8)!, limit: 3, beforeId: rows[2]!.id },
      { since: times.at(-8)!, limit: 100, action: 'job_triggered' },
      { since: times[6]!, limit: 1, jobId: created[9]!.id },
      { since: '2999-01-01T00:00:00.000Z', limit: 5 },
    ];
    for (const query of cases) {
      const expected = rows
        .filter((row) => row.created_at >= query.since)
        .filter((row) => query.action === undefined || row.action === query.action)
        .filter((row) => query.jobId === undefined || row.job_id === query.jobId)
        .filter((row) => query.beforeId === undefined || row.id < query.beforeId)
        .slice(0, query.limit);
      expect(await listAudit(server.context.store.db, query), JSON.stringify(query)).toEqual(
        expected,
      );
    }
  });

  it('audit log since bounds the id walk', async () => {
    const newest = await server.context.store.db
      .selectFrom('audit_log')
      .select('created_at')
      .orderBy('created_at', 'desc')
      .executeTakeFirstOrThrow();
    const future = '2999-01-01T00:00:00.000Z';
    const [futureProbe, ...futureRest] = await plansOf(server.context.store.path, (db) =>
      listAudit(db, { since: future, action: 'job_triggered', limit: 11 }),
    );
    // Nothing matches, so the probe of audit_log_created is the only statement.
    expect(futureProbe).toMatch(/SEARCH audit_log USING COVERING INDEX audit_log_created/);
    expect(futureRest).toEqual([]);

    const [recentProbe, recentPage] = await plansOf(server.context.store.path, (db) =>
      listAudit(db, { since: newest.created_at, limit: 11 }),
    );
    expect(recentProbe).toMatch(/SEARCH audit_log USING COVERING INDEX audit_log_created/);
    expect(recentPage).toMatch(/SEARCH audit_log USING INTEGER PRIMARY KEY \(rowid>\?\)/);
    expect(recentPage).not.toMatch(/SCAN audit_log/);

    const [, actionPage] = await plansOf(server.context.store.path, (db) =>
      listAudit(db, { since: newest.created_at, action: 'job_triggered', limit: 11 }),
    );
    expect(actionPage).toMatch(
      /SEARCH audit_log USING INDEX audit_log_action \(action=\? AND id>\?\)/,
    );
  });
});
