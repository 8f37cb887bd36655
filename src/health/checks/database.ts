/**
 * `database` check: runs the configured query, runs `PRAGMA quick_check` every
 * integrity_interval, and measures the free space of the database's file system.
 *
 * The query and quick_check run in a worker thread on a read-only connection of their own.
 * When the WAL is over wal_warn, the thread first runs a passive checkpoint on a second one.
 * better-sqlite3 is synchronous, so on the main thread a slow query or a long quick_check
 * would stop every other check and the API with it. In a worker the timeout can end them.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { DatabaseCheckSettings, FreeSpaceLimit } from '../../pipeline/types.js';
import { BUSY_TIMEOUT_MS } from '../../store/database.js';
import { nowIso } from '../../util/time.js';
import { formatBytes, walHealth } from '../wal.js';
import type { HealthState, ProbeContext, ProbeResult } from '../types.js';

const DRIVER_PATH = createRequire(import.meta.url).resolve('better-sqlite3');
/** Problems quick_check lists at most; the first ones are enough to act on. */
const MAX_INTEGRITY_MESSAGES = 20;

// CommonJS source, because an `eval` worker runs as a script and not as a module.
const PROBE_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let db;
try {
  const Database = require(workerData.driver);
  db = new Database(workerData.path, {
    readonly: true,
    fileMustExist: true,
    timeout: workerData.busyTimeoutMs,
  });
  if (workerData.checkpoint) {
    // A passive checkpoint waits for no reader and no writer. When it fails, the WAL stays
    // as the check then reports it.
    try {
      const writer = new Database(workerData.path, { fileMustExist: true, timeout: 0 });
      try {
        writer.pragma('wal_checkpoint(PASSIVE)');
      } finally {
        writer.close();
      }
    } catch {}
  }
  const started = performance.now();
  const statement = db.prepare(workerData.query);
  let rows = 0;
  if (statement.reader) rows = statement.all().length;
  else statement.run();
  const queryMs = performance.now() - started;
  let integrity = null;
  let integrityMs = null;
  if (workerData.integrity) {
    const integrityStarted = performance.now();
    integrity = db
      .pragma('quick_check(' + workerData.maxMessages + ')')
      .map((row) => String(Object.values(row)[0]));
    integrityMs = performance.now() - integrityStarted;
  }
  parentPort.postMessage({ ok: true, queryMs, rows, integrity, integrityMs });
} catch (error) {
  parentPort.postMessage({
    ok: false,
    message: error && error.message ? error.message : String(error),
    code: error && error.code ? error.code : null,
  });
} finally {
  if (db) db.close();
}
`;

interface ProbeOutput {
  ok: boolean;
  message?: string;
  code?: string | null;
  queryMs?: number;
  rows?: number;
  integrity?: string[] | null;
  integrityMs?: number | null;
}

interface IntegrityMemo {
  checked_at: string;
  ok: boolean;
  messages: string[];
  duration_ms: number;
}

export async function probeDatabase(
  settings: DatabaseCheckSettings,
  context: ProbeContext,
): Promise<ProbeResult> {
  const dbPath = context.app.store.path;
  const previous = context.memo.integrity as IntegrityMemo | undefined;
  const integrityDue =
    previous === undefined ||
    Date.now() - Date.parse(previous.checked_at) >= settings.integrityIntervalMs;

  // Checkpoints run after writes, so a WAL that grew under a long read stays uncopied after
  // that read ends until the next write. The check runs one itself while the WAL is too large.
  const walBefore = walHealth(context.app.store.walUse(), settings.walWarnBytes);
  const [output, disk] = await Promise.all([
    runProbeWorker(
      {
        path: dbPath,
        query: settings.query,
        integrity: integrityDue,
        checkpoint: walBefore.status !== 'healthy',
      },
      context.signal,
    ),
    measureDisk(path.dirname(dbPath), settings),
  ]);

  let integrity = previous;
  if (output.ok && output.integrity !== null && output.integrity !== undefined) {
    integrity = {
      checked_at: nowIso(),
      ok: output.integrity.length === 1 && output.integrity[0] === 'ok',
      messages: output.integrity,
      duration_ms: round(output.integrityMs ?? 0),
    };
    context.memo.integrity = integrity;
  }

  const wal = walHealth(context.app.store.walUse(), settings.walWarnBytes);
  const details: Record<string, unknown> = {
    path: dbPath,
    query: settings.query,
    query_ms: output.ok ? round(output.queryMs ?? 0) : null,
    rows: output.ok ? output.rows : null,
    integrity: integrity ?? null,
    disk: disk.details,
    wal: wal.details.wal ?? null,
  };
  const findings = collectFindings(output, integrity, disk, settings);
  if (wal.status !== 'healthy') {
    findings.push({ status: wal.status, reason: String(wal.details.reason) });
  }
  const worst = findings.find((finding) => finding.status === 'unhealthy') ?? findings[0];
  return {
    status: worst?.status ?? 'healthy',
    reason: findings.map((finding) => finding.reason).join('; ') || undefined,
    latencyMs: output.ok ? output.queryMs : undefined,
    details,
  };
}

interface Finding {
  status: HealthState;
  reason: string;
}

function collectFindings(
  output: ProbeOutput,
  integrity: IntegrityMemo | undefined,
  disk: DiskMeasure,
  settings: DatabaseCheckSettings,
): Finding[] {
  const findings: Finding[] = [];
  if (!output.ok) {
    const code = output.code === null || output.code === undefined ? '' : ` (${output.code})`;
    findings.push({ status: 'unhealthy', reason: `query failed: ${output.message}${code}` });
  } else if (
    settings.degradedLatencyMs !== undefined &&
    (output.queryMs ?? 0) > settings.degradedLatencyMs
  ) {
    findings.push({
      status: 'degraded',
      reason: `query took ${Math.round(output.queryMs ?? 0)} ms, above degraded_latency of ${settings.degradedLatencyMs} ms`,
    });
  }
  if (integrity !== undefined && !integrity.ok) {
    findings.push({
      status: 'unhealthy',
      reason: `PRAGMA quick_check at ${integrity.checked_at} found: ${integrity.messages.slice(0, 3).join('; ')}`,
    });
  }
  if (disk.finding !== undefined) findings.push(disk.finding);
  return findings;
}

interface DiskMeasure {
  details: Record<string, unknown>;
  finding: Finding | undefined;
}

async function measureDisk(
  directory: string,
  settings: DatabaseCheckSettings,
): Promise<DiskMeasure> {
  let stats: fs.StatsFs;
  try {
    stats = await fs.promises.statfs(directory);
  } catch (error) {
    const reason = `cannot read the free space of ${directory}: ${(error as Error).message}`;
    return { details: { path: directory, error: reason }, finding: { status: 'degraded', reason } };
  }
  const freeBytes = stats.bavail * stats.bsize;
  const totalBytes = stats.blocks * stats.bsize;
  const freePercent = totalBytes === 0 ? 100 : (freeBytes / totalBytes) * 100;
  const details = {
    path: directory,
    free_bytes: freeBytes,
    total_bytes: totalBytes,
    free_percent: round(freePercent),
    warn_below: describeLimit(settings.diskWarn),
    fail_below: describeLimit(settings.diskFail),
  };
  const below = (limit: FreeSpaceLimit) =>
    'bytes' in limit ? freeBytes < limit.bytes : freePercent < limit.percent;
  const free = `${formatBytes(freeBytes)} (${round(freePercent)}%) free on ${directory}`;
  if (below(settings.diskFail)) {
    return {
      details,
      finding: {
        status: 'unhealthy',
        reason: `${free}, below disk_fail of ${describeLimit(settings.diskFail)}`,
      },
    };
  }
  if (below(settings.diskWarn)) {
    return {
      details,
      finding: {
        status: 'degraded',
        reason: `${free}, below disk_warn of ${describeLimit(settings.diskWarn)}`,
      },
    };
  }
  return { details, finding: undefined };
}

function runProbeWorker(
  input: { path: string; query: string; integrity: boolean; checkpoint: boolean },
  signal: AbortSignal,
): Promise<ProbeOutput> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(PROBE_SOURCE, {
      eval: true,
      workerData: {
        ...input,
        driver: DRIVER_PATH,
        busyTimeoutMs: BUSY_TIMEOUT_MS,
        maxMessages: MAX_INTEGRITY_MESSAGES,
      },
    });
    const onAbort = () => {
      void worker.terminate();
      reject(new Error('database probe stopped: timed out or the monitor is stopping'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (output: ProbeOutput) => {
      signal.removeEventListener('abort', onAbort);
      resolve(output);
    });
    worker.once('error', (error) => {
      signal.removeEventListener('abort', onAbort);
      reject(error);
    });
    worker.once('exit', (code) => {
      signal.removeEventListener('abort', onAbort);
      reject(new Error(`database probe thread exited with code ${code} without a result`));
    });
  });
}

function describeLimit(limit: FreeSpaceLimit): string {
  return 'bytes' in limit ? formatBytes(limit.bytes) : `${limit.percent}%`;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
