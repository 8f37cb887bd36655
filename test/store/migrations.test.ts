/**
 * Migrations that change the indexes of an existing database. Each one applies to a database
 * that already ran later migrations, and the affected queries still use an index.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  nextDueTime,
  supersedeReplacedReports,
  takeDueReports,
} from '../../src/github/status-outbox.js';
import { claimCandidates } from '../../src/dispatch/claim.js';
import { LATEST_OF_TYPE } from '../../src/orchestrator/dependencies.js';
import { openStore } from '../../src/store/database.js';
import { countJobsByStatus } from '../../src/store/jobs.js';
import { plansOf, queryPlan } from '../support/plan.js';
import { makeTempDir } from '../support/server.js';

describe('duplicate task index migration', () => {
  it('drops tasks_job from an older database', async () => {
    const dbPath = path.join(makeTempDir('slipway-migration-'), 'old.db');
    await (await openStore(dbPath)).close();

    // The state of a database that ran every other migration before this one existed.
    const old = new Database(dbPath);
    old.exec('CREATE INDEX tasks_job ON tasks (job_id, job_attempt, idx)');
    old
      .prepare(`DELETE FROM schema_migrations WHERE name = '0005_drop_duplicate_task_index'`)
      .run();
    old.close();

    const store = await openStore(dbPath);
    try {
      const { indexes, plan } = store.read((sqlite) => ({
        indexes: sqlite
          .prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'`)
          .all()
          .map((row) => (row as { name: string }).name),
        plan: sqlite
          .prepare(`EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE job_id = 'ci-0123abcd'`)
          .all()
          .map((row) => (row as { detail: string }).detail),
      }));
      expect(indexes).not.toContain('tasks_job');
      expect(plan.join('\n')).toMatch(
        /SEARCH tasks USING INDEX sqlite_autoindex_tasks_\d \(job_id=\?\)/,
      );
    } finally {
      await store.close();
    }
  });
});

describe('worker token delete migration', () => {
  it('clears token ids of deleted tokens', async () => {
    const dbPath = path.join(makeTempDir('slipway-migration-'), 'old.db');
    await (await openStore(dbPath)).close();

    // A database that ran 0012, whose workers name a token that was deleted since, and one
    // created after the deletion with the same id.
    const old = new Database(dbPath);
    old.exec('DROP TRIGGER workers_token_deleted');
    old.prepare(`DELETE FROM schema_migrations WHERE name = '0013_worker_token_delete'`).run();
    const earlier = '2026-01-01T00:00:00.000Z';
    const now = new Date().toISOString();
    const insertToken = old.prepare(
      `INSERT INTO api_tokens (id, name, role, token_hash, prefix, created_at)
       VALUES (?, ?, 'agent', ?, 'slw_', ?)`,
    );
    insertToken.run(7, 'kept', 'hash-kept', earlier);
    insertToken.run(8, 'deleted', 'hash-deleted', earlier);
    insertToken.run(9, 'reused', 'hash-reused', earlier);
    const insertWorker = old.prepare(
      `INSERT INTO workers (id, name, hostname, capacity, status, registered_at,
         last_heartbeat_at, token_id)
       VALUES (?, ?, 'host-a', 1, 'offline', ?, ?, ?)`,
    );
    insertWorker.run('of-kept', 'of-kept', now, now, 7);
    insertWorker.run('of-deleted', 'of-deleted', now, now, 8);
    insertWorker.run('of-reused', 'of-reused', now, now, 9);
    old.prepare('DELETE FROM api_tokens WHERE id IN (8, 9)').run();
    insertToken.run(
      9,
      'created-later',
      'hash-created-later',
      new Date(Date.now() + 1000).toISOString(),
    );
    old.close();

    const store = await openStore(dbPath);
    try {
      const tokenIds = () =>
        store.read((sqlite) =>
          Object.fromEntries(
            sqlite
              .prepare('SELECT id, token_id FROM workers ORDER BY id')
              .all()
              .map((row) => [(row as { id: string }).id, (row as { token_id: number }).token_id]),
          ),
        );
      expect(tokenIds()).toEqual({ 'of-deleted': null, 'of-kept': 7, 'of-reused': null });

      await store.db.deleteFrom('api_tokens').where('id', '=', 7).execute();
      expect(tokenIds()).toEqual({ 'of-deleted': null, 'of-kept': null, 'of-reused': null });
    } finally {
      await store.close();
    }
  });
});

describe('job status counts migration', () => {
  it('counts the jobs of an older database', async () => {
    const dbPath = path.join(makeTempDir('slipway-migration-'), 'old.db');
    await (await openStore(dbPath)).close();

    // A database that ran 0021, with jobs in finished and active statuses.
    const old = new Database(dbPath);
    old.exec(`
      DROP TRIGGER jobs_count_insert;
      DROP TRIGGER jobs_count_update;
      DROP TRIGGER jobs_count_delete;
      DROP TABLE job_status_counts;
    `);
    old.prepare(`DELETE FROM schema_migrations WHERE name = '0022_job_status_counts'`).run();
    const insert = old.prepare(
      `INSERT INTO jobs (id, type, status, created_at, updated_at) VALUES (?, 'ci', ?, ?, ?)`,
    );
    const now = new Date().toISOString();
    const finished = ['success', 'success', 'success', 'failure', 'failure', 'skipped'];
    for (const [index, status] of [...finished, 'queued', 'queued', 'running'].entries()) {
      insert.run(`ci-${index.toString(16).padStart(8, '0')}`, status, now, now);
    }
    old.close();

    const store = await openStore(dbPath);
    try {
      expect(await countJobsByStatus(store.db)).toEqual({
        success: 3,
        failure: 2,
        skipped: 1,
        queued: 2,
        running: 1,
      });
      // The triggers count changes made after the migration.
      await store.db
        .updateTable('jobs')
        .set({ status: 'cancelled' })
        .where('status', '=', 'queued')
        .execute();
      expect(await countJobsByStatus(store.db)).toEqual({
        success: 3,
        failure: 2,
        skipped: 1,
        cancelled: 2,
        running: 1,
      });
    } finally {
      await store.close();
    }
  });
});

describe('index migrations', () => {
  /** Opens a database that ran every migration but `name`, with `oldIndex` in place of its index. */
  async function reopenBefore(name: string, oldIndex: string) {
    const dbPath = path.join(makeTempDir('slipway-migration-'), 'old.db');
    await (await openStore(dbPath)).close();
    const old = new Database(dbPath);
    const indexName = /CREATE (?:UNIQUE )?INDEX (\w+)/.exec(oldIndex)![1]!;
    old.exec(`DROP INDEX ${indexName}`);
    old.exec(oldIndex);
    old.prepare('DELETE FROM schema_migrations WHERE name = ?').run(name);
    old.close();
    return openStore(dbPath);
  }

  const columnsOf = (store: Awaited<ReturnType<typeof openStore>>, index: string) =>
    store.read((sqlite) =>
      sqlite
        .prepare(`SELECT name FROM pragma_index_info(?) ORDER BY seqno`)
        .all(index)
        .map((row) => (row as { name: string }).name),
    );

  it('scopes the idempotency index to the requester', async () => {
    const store = await reopenBefore(
      '0006_idempotency_key_per_token',
      `CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
         WHERE idempotency_key IS NOT NULL`,
    );
    try {
      expect(columnsOf(store, 'jobs_idempotency_key')).toEqual(['requested_by', 'idempotency_key']);
    } finally {
      await store.close();
    }
  });

  it('finds the latest job of a commit without a sort', async () => {
    const store = await reopenBefore(
      '0007_jobs_commit_type_order',
      'CREATE INDEX jobs_commit_type ON jobs (commit_sha, type, created_at)',
    );
    try {
      expect(columnsOf(store, 'jobs_commit_type')).toEqual([
        'commit_sha',
        'type',
        'created_at',
        'id',
      ]);
      const values = { commit: '0123456789abcdef0123456789abcdef01234567', type: 'ci' };
      const plan = store.read((sqlite) =>
        queryPlan(sqlite, LATEST_OF_TYPE.sql, LATEST_OF_TYPE.bind(values)),
      );
      // The branch for the same commit text reads the index in order. Only the branches for
      // longer and shorter SHAs, which find few jobs or none, sort.
      expect(plan).toMatch(
        /LEFT\nSEARCH jobs USING INDEX jobs_commit_type \(commit_sha=\? AND type=\?\)\nRIGHT/,
      );
      expect(plan.match(/TEMP B-TREE/g)).toHaveLength(2);
    } finally {
      await store.close();
    }
  });

  it('orders concurrency groups by creation', async () => {
    const store = await reopenBefore(
      '0021_jobs_concurrency_group_order',
      `CREATE INDEX jobs_concurrency_group ON jobs (concurrency_group, status)
         WHERE concurrency_group IS NOT NULL`,
    );
    try {
      expect(columnsOf(store, 'jobs_concurrency_group')).toEqual([
        'concurrency_group',
        'status',
        'created_at',
        'id',
      ]);
      const query = claimCandidates(store.db, ['local'], 4).compile();
      const plan = store.read((sqlite) => queryPlan(sqlite, query.sql, query.parameters));
      expect(plan).toMatch(
        /SEARCH older USING COVERING INDEX jobs_concurrency_group \(concurrency_group=\? AND status=\? AND created_at<\?\)/,
      );
    } finally {
      await store.close();
    }
  });

  it('finds pending reports of a repository without a scan', async () => {
    const store = await reopenBefore(
      '0041_github_status_outbox_due_repository',
      `CREATE INDEX github_status_outbox_due ON github_status_outbox (next_attempt_at, id)
         WHERE outcome = 'pending'`,
    );
    try {
      expect(columnsOf(store, 'github_status_outbox_due')).toEqual([
        'repository',
        'next_attempt_at',
        'id',
      ]);
    } finally {
      await store.close();
    }

    const [nextDue, due, supersede] = await plansOf(store.path, async (db) => {
      await nextDueTime(db, 'acme/app');
      await takeDueReports(db, 'acme/app', 10);
      await db.transaction().execute((trx) => supersedeReplacedReports(trx, 'acme/app'));
    });
    expect(nextDue).toMatch(/USING COVERING INDEX github_status_outbox_due \(repository=\?\)/);
    expect(nextDue).not.toMatch(/TEMP B-TREE/);
    expect(due).toMatch(
      /SEARCH o USING INDEX github_status_outbox_due \(repository=\? AND next_attempt_at<\?\)/,
    );
    expect(supersede).toMatch(/SEARCH o USING INDEX github_status_outbox_due \(repository=\?\)/);
  });
});
