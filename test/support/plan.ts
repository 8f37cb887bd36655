/** SQLite's query plan of a statement, for tests that check which index a query uses. */
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, type CompiledQuery } from 'kysely';
import { CachingSqliteDialect } from '../../src/store/driver.js';
import type { Database } from '../../src/store/schema.js';

/** Returns the detail lines of EXPLAIN QUERY PLAN for `sql` with its parameters, one per line. */
export function queryPlan(
  sqlite: BetterSqlite3.Database,
  sql: string,
  parameters: readonly unknown[] = [],
): string {
  return sqlite
    .prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .all(...parameters)
    .map((row) => (row as { detail: string }).detail)
    .join('\n');
}

/** Runs `work` on a logging Kysely over `dbPath` and returns each statement's plan. */
export async function plansOf(dbPath: string, work: (db: Kysely<Database>) => Promise<unknown>) {
  const sqlite = new BetterSqlite3(dbPath);
  const queries: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: new CachingSqliteDialect(sqlite),
    log: (event) => {
      queries.push(event.query);
    },
  });
  try {
    await work(db);
    return queries.map((query) => queryPlan(sqlite, query.sql, query.parameters));
  } finally {
    await db.destroy();
  }
}
