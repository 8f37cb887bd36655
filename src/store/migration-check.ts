/**
 * Detects a database written by a newer version of Slipway: its schema_migrations lists a
 * migration that this version does not have, so this version does not know its schema.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { migrationNames } from './migrations/index.js';

/** Returns the migrations in the database's schema_migrations that this version does not have. */
export function findUnknownMigrations(sqlite: BetterSqlite3.Database): string[] {
  const table = sqlite
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (table === undefined) return [];
  const applied = sqlite
    .prepare('SELECT name FROM schema_migrations ORDER BY name')
    .pluck()
    .all() as string[];
  const known = new Set(migrationNames);
  return applied.filter((name) => !known.has(name));
}

/** Lists migration names for a message: `migration A` or `migrations A, B`. */
export function describeMigrations(names: string[]): string {
  return `${names.length === 1 ? 'migration' : 'migrations'} ${names.join(', ')}`;
}

export class NewerDatabaseError extends Error {
  override name = 'NewerDatabaseError';

  constructor(
    readonly dbPath: string,
    readonly unknownMigrations: string[],
  ) {
    super(
      `database ${dbPath} was written by a newer version of Slipway: it lists ` +
        `${describeMigrations(unknownMigrations)}, which this version does not have. ` +
        'Upgrade Slipway, or restore a backup made by this version',
    );
  }
}

/** Kysely's message for an applied migration that its provider does not list (Kysely 0.28, migrator.js). */
const MISSING_MIGRATION = /previously executed migration (\S+) is missing/;

/**
 * Returns NewerDatabaseError when the migrator failed because the database lists a migration
 * that this version does not have, and `error` unchanged otherwise. openStore checks this
 * before migrating, so this only matters when a newer version migrates the same database
 * between that check and the migrator's.
 */
export function explainMigrationError(error: unknown, dbPath: string): unknown {
  const cause = error instanceof Error ? error.cause : undefined;
  const match = cause instanceof Error ? MISSING_MIGRATION.exec(cause.message) : null;
  return match === null ? error : new NewerDatabaseError(dbPath, [match[1]!]);
}
