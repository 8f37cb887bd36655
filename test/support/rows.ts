/** Row counts of the tables a request may change, to prove that a rejected one changed nothing. */
import type { Kysely } from 'kysely';
import type { Database } from '../../src/store/schema.js';

const TABLES = [
  'jobs',
  'tasks',
  'audit_log',
  'state_variables',
  'api_tokens',
  'workflow_dependencies',
] as const;

export type RowCounts = Record<(typeof TABLES)[number], number>;

export async function countRows(db: Kysely<Database>): Promise<RowCounts> {
  const counts = {} as RowCounts;
  for (const table of TABLES) {
    const row = await db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .executeTakeFirstOrThrow();
    counts[table] = Number(row.count);
  }
  return counts;
}

/** Returns the latest `updated_at` of any job or task, which moves whenever one of them changes. */
export async function lastUpdate(db: Kysely<Database>): Promise<string> {
  const jobs = await db
    .selectFrom('jobs')
    .select((eb) => eb.fn.max('updated_at').as('latest'))
    .executeTakeFirst();
  const tasks = await db
    .selectFrom('tasks')
    .select((eb) => eb.fn.max('updated_at').as('latest'))
    .executeTakeFirst();
  return `${jobs?.latest ?? ''}|${tasks?.latest ?? ''}`;
}
