/** SQLite's query plan of a statement, for tests that check which index a query uses. */
import type BetterSqlite3 from 'better-sqlite3';

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
