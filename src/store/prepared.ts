/**
 * Queries built with Kysely once and then run as prepared statements, for the paths that run
 * on every request (a job read, a trigger). Building and compiling a Kysely query costs more
 * than running it on SQLite, and the async driver adds a promise per statement. A prepared
 * query pays for both once. The queries are still Kysely builders: they run on better-sqlite3
 * here, and a PostgreSQL store would compile the same builders with its own compiler.
 *
 * A query names its inputs with `param('name')`. They compile to ordinary placeholders, and
 * `bind` puts each call's values in their places:
 *
 *   const byId = prepare((db) => db.selectFrom('jobs').selectAll().where('id', '=', param('id')));
 *   byId.get<JobRow>(sqlite, { id });
 */
import type BetterSqlite3 from 'better-sqlite3';
import {
  DummyDriver,
  Kysely,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  OperationNodeTransformer,
  ValueNode,
  sql,
  type Compilable,
  type RawBuilder,
} from 'kysely';
import type { Database } from './schema.js';

const MARK = '\u0000param:';

/** Returns a named input of a prepared query, typed as the column's type so builders accept it. */
export function param<T = string>(name: string): T {
  return `${MARK}${name}` as T;
}

/**
 * Writes a prepared query's constants (every value that is not a `param`) into its SQL text.
 * SQLite compares a bound value with a partial index's WHERE (`status = 'running'`) when the
 * statement runs, so it prepares a statement that binds `status = ?` again on every run.
 */
class InlineConstants extends OperationNodeTransformer {
  protected override transformValue(node: ValueNode): ValueNode {
    const { value } = node;
    if (node.immediate === true) return node;
    if (typeof value === 'string' && !value.startsWith(MARK))
      return ValueNode.createImmediate(value);
    if (typeof value === 'number' && Number.isFinite(value))
      return ValueNode.createImmediate(value);
    return node;
  }
}

const inlineConstants = new InlineConstants();

/**
 * Returns `value` as a constant in the SQL text, for a query run through Kysely that compares
 * it with the column of a partial index's WHERE (see InlineConstants).
 */
export function literal<T extends string>(value: T): RawBuilder<T> {
  return sql.lit(value);
}

const dialect = {
  createAdapter: () => new SqliteAdapter(),
  createDriver: () => new DummyDriver(),
  createIntrospector: (db: Kysely<unknown>) => new SqliteIntrospector(db),
  createQueryCompiler: () => new SqliteQueryCompiler(),
};

/** Builds prepared queries without a connection; only their SQL text is used. */
const compiler = new Kysely<Database>({
  dialect,
  plugins: [
    {
      transformQuery: (args) => inlineConstants.transformNode(args.node),
      transformResult: async (args) => args.result,
    },
  ],
});

/** Builds the queries of queryOnce, whose values come at run time and stay bound. */
const onceCompiler = new Kysely<Database>({ dialect });

type Slot = { name: string } | { value: unknown };

const statements = new WeakMap<BetterSqlite3.Database, Map<string, BetterSqlite3.Statement>>();

export class PreparedQuery<P extends Record<string, unknown>> {
  readonly sql: string;
  readonly #slots: Slot[];

  constructor(query: Compilable) {
    const compiled = query.compile();
    this.sql = compiled.sql;
    this.#slots = compiled.parameters.map((value) =>
      typeof value === 'string' && value.startsWith(MARK)
        ? { name: value.slice(MARK.length) }
        : { value },
    );
  }

  bind(values: P): unknown[] {
    return this.#slots.map((slot) => {
      if (!('name' in slot)) return slot.value;
      const value = values[slot.name];
      if (value === undefined)
        throw new Error(`no value for parameter ${slot.name} of ${this.sql}`);
      return value;
    });
  }

  all<R>(sqlite: BetterSqlite3.Database, values: P): R[] {
    return this.#statement(sqlite).all(this.bind(values)) as R[];
  }

  get<R>(sqlite: BetterSqlite3.Database, values: P): R | undefined {
    return this.#statement(sqlite).get(this.bind(values)) as R | undefined;
  }

  run(sqlite: BetterSqlite3.Database, values: P): BetterSqlite3.RunResult {
    return this.#statement(sqlite).run(this.bind(values));
  }

  #statement(sqlite: BetterSqlite3.Database): BetterSqlite3.Statement {
    let cache = statements.get(sqlite);
    if (cache === undefined) {
      cache = new Map();
      statements.set(sqlite, cache);
    }
    let statement = cache.get(this.sql);
    if (statement === undefined) {
      statement = sqlite.prepare(this.sql);
      cache.set(this.sql, statement);
    }
    return statement;
  }
}

/**
 * Returns `{ column: param('column') }` for each column, for an insert of whole rows. The
 * values are typed `never` so that they fit every column type. The row passed at run time is
 * checked against the table type instead (see PreparedQuery's parameter type).
 */
export function paramsFor<K extends string>(columns: readonly K[]): Record<K, never> {
  return Object.fromEntries(columns.map((column) => [column, param(column)])) as Record<K, never>;
}

const updates = new Map<string, PreparedQuery<Record<string, unknown>>>();

/**
 * Runs `UPDATE table SET <the keys of values> WHERE id = ?` as a prepared query, one per table and
 * set of columns, for updates whose columns depend on the change (a task that ends also gets
 * finished_at). Returns how many rows changed.
 */
export function updateById(
  sqlite: BetterSqlite3.Database,
  table: 'jobs' | 'tasks',
  id: string,
  values: Record<string, unknown>,
): number {
  const columns = Object.keys(values);
  const key = `${table}:${columns.join(',')}`;
  let query = updates.get(key);
  if (query === undefined) {
    query = prepare((db) =>
      db.updateTable(table).set(paramsFor(columns)).where('id', '=', param('row_id')),
    );
    updates.set(key, query);
  }
  return query.run(sqlite, { ...values, row_id: id }).changes;
}

/**
 * Compiles `build`'s query and runs it once on `sqlite`, without keeping the statement, for a
 * synchronous read (Store.read) whose SQL text changes with its input, such as a list of ids.
 * Keeping a statement per text would fill the cache with texts that seldom repeat.
 */
export function queryOnce<R>(
  sqlite: BetterSqlite3.Database,
  build: (db: Kysely<Database>) => Compilable,
): R[] {
  const compiled = build(onceCompiler).compile();
  return sqlite.prepare(compiled.sql).all(compiled.parameters as unknown[]) as R[];
}

/** Compiles `build`'s query once; see the module comment. */
export function prepare<P extends Record<string, unknown> = Record<string, never>>(
  build: (db: Kysely<Database>) => Compilable,
): PreparedQuery<P> {
  return new PreparedQuery<P>(build(compiler));
}
