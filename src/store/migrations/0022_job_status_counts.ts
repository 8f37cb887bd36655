import { sql, type Kysely } from 'kysely';

const FINISHED = `('success','failure','error','timed_out','cancelled','skipped')`;

/**
 * Keeps the number of jobs in each finished status in job_status_counts, for GET /metrics and
 * GET /api/state. Counting them from jobs_status_created read every finished job on each
 * scrape: 10 to 14 ms for 200,000 jobs and 70 ms for 1,000,000 (bench/api/metrics-scrape.ts,
 * 2-core machine). The active statuses are still counted from that index, so a scrape costs
 * time in proportion to the waiting, queued and running jobs only.
 *
 * Triggers keep the counts in the transaction of every insert, status change and delete of a
 * job, whichever process or connection writes it. Counting in the application instead would
 * miss the writes of another Slipway version on the same file, such as an orchestrator that
 * still runs the old code while `slipway init-db` migrates during an upgrade.
 *
 * SQLite runs a trigger's program for every inserted row and every row whose status is set,
 * even when the WHEN clause is false. The store's write for `POST /api/trigger/ci` (the
 * insert and the cancel of the branch's previous job) took about 10 µs more CPU with the
 * triggers, about 4 %: the median of eight runs of bench/api/count-triggers.ts, which ranged
 * from 5 to 33 µs on a 2-core machine loaded by other work. That is within the run-to-run
 * variation of the whole request in bench/api/cpu-per-request.sh.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE job_status_counts (
      status TEXT PRIMARY KEY CHECK (status IN ${sql.raw(FINISHED)}),
      count INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID
  `.execute(db);
  await sql`
    INSERT INTO job_status_counts (status, count)
    SELECT finished.column1, (SELECT count(*) FROM jobs WHERE jobs.status = finished.column1)
    FROM (VALUES ('success'), ('failure'), ('error'), ('timed_out'), ('cancelled'), ('skipped'))
      AS finished
  `.execute(db);
  await sql`
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    WHEN NEW.status IN ${sql.raw(FINISHED)}
    BEGIN
      UPDATE job_status_counts SET count = count + 1 WHERE status = NEW.status;
    END
  `.execute(db);
  // Only finished statuses have a row, so the UPDATE for an active status changes nothing.
  await sql`
    CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs
    WHEN NEW.status <> OLD.status
      AND (NEW.status IN ${sql.raw(FINISHED)} OR OLD.status IN ${sql.raw(FINISHED)})
    BEGIN
      UPDATE job_status_counts SET count = count - 1 WHERE status = OLD.status;
      UPDATE job_status_counts SET count = count + 1 WHERE status = NEW.status;
    END
  `.execute(db);
  await sql`
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    WHEN OLD.status IN ${sql.raw(FINISHED)}
    BEGIN
      UPDATE job_status_counts SET count = count - 1 WHERE status = OLD.status;
    END
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER jobs_count_delete`.execute(db);
  await sql`DROP TRIGGER jobs_count_update`.execute(db);
  await sql`DROP TRIGGER jobs_count_insert`.execute(db);
  await sql`DROP TABLE job_status_counts`.execute(db);
}
