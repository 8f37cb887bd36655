/**
 * Migrations that change the indexes of an existing database. Each one applies to a database
 * that already ran later migrations, and the affected queries still use an index.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/database.js';
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
