import { sql, type Kysely } from 'kysely';

/**
 * A random id of the installation, made once with its database. Task containers carry it as
 * a label, so that a sweep removes only its own installation's leftovers. An id made from the
 * database path was the same for every compose install, whose containers all see the database
 * at /var/lib/slipway/state, so the sweep of one removed the running containers of another.
 * NOTE: containers that ran across this upgrade keep the old id, so no sweep removes them;
 * they go when their task's worker cleans up, or by hand.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE installation (
      id TEXT PRIMARY KEY NOT NULL,
      created_at TEXT NOT NULL
    )
  `.execute(db);
  await sql`
    INSERT INTO installation (id, created_at)
    VALUES (lower(hex(randomblob(6))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE installation`.execute(db);
}
