/**
 * API_WORKERS > 1: the API runs in several processes sharing one port (node:cluster), so reads
 * use every core. Each process has its own SQLite connection. SQLite's write lock serialises
 * their writes, and a write that finds the lock taken waits up to busy_timeout (15 s).
 * The primary supervises: it restarts a process that dies, and on SIGTERM, SIGINT or SIGHUP it
 * sends SIGTERM to each process and waits for it to exit. It also keeps each token's
 * rate-limit window for all the processes (see shared-rate-limit.ts).
 */
import cluster from 'node:cluster';
import type { Config } from '../config/env.js';
import { createLogger } from '../log.js';
import { serveQuota } from '../api/shared-rate-limit.js';
import { openStore } from '../store/database.js';
import { ensureAdminToken } from './admin-token.js';
import { ensureAgentToken } from './agent-token.js';
import { listenForStop } from './stop-signals.js';

const RESTART_DELAY_MS = 1_000;

/**
 * Runs the primary of an API cluster until a signal stops it. Migrations run once here,
 * before any process starts, so the processes do not race to apply them.
 */
export async function runApiPrimary(config: Config): Promise<void> {
  const logger = createLogger(config.logLevel).child({ role: 'api-primary' });
  // The handlers come first, so that a signal during the setup below stops the primary cleanly.
  const stop = listenForStop((signal) => {
    logger.error(
      { signal },
      `received ${signal} again, exiting now without waiting for the API processes`,
    );
  });
  if (stop.early !== undefined) {
    logger.info({ signal: stop.early }, `received ${stop.early} while starting, stopping`);
    return;
  }

  const store = await openStore(config.dbPath, { logger });
  const admin = await ensureAdminToken(config, store, logger);
  await ensureAgentToken(config, store, logger);
  await store.close();
  if (admin.file !== undefined) {
    logger.info({ file: admin.file }, `an admin token was written to ${admin.file}`);
  }

  // Each token's rate limit is kept here, so that it holds for all the processes together.
  const stopQuota = serveQuota(config.api.workers);
  let stopping = false;
  const listening = new WeakSet<object>();
  let failStart!: (code: number) => void;
  const startFailed = new Promise<number>((resolve) => {
    failStart = resolve;
  });
  const fork = () => {
    if (stopping) return;
    const worker = cluster.fork({ SLIPWAY_CLUSTER_WORKER: '1' });
    worker.once('listening', () => listening.add(worker));
    logger.info({ worker: worker.process.pid }, 'API process started');
  };
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    if (!listening.has(worker)) {
      // A process that ends before it listens failed to start (its own error is on stderr),
      // and its replacement would fail the same way. So the command ends, and a supervisor
      // such as systemd or Compose can restart it or report it.
      logger.error(
        { worker: worker.process.pid, code, signal },
        'API process failed to start; stopping the others',
      );
      failStart(code === 0 || code === null ? 1 : code);
      return;
    }
    logger.error(
      { worker: worker.process.pid, code, signal },
      `API process exited unexpectedly; restarting it in ${RESTART_DELAY_MS} ms`,
    );
    setTimeout(fork, RESTART_DELAY_MS);
  });
  for (let i = 0; i < config.api.workers; i++) fork();

  const outcome = await Promise.race([
    stop.received.then((signal) => ({ signal, code: undefined })),
    startFailed.then((code) => ({ signal: undefined, code })),
  ]);
  stopping = true;
  if (outcome.signal !== undefined) {
    logger.info(
      { signal: outcome.signal },
      `received ${outcome.signal}, stopping ${config.api.workers} API processes`,
    );
  }
  const workers = Object.values(cluster.workers ?? {}).filter((worker) => worker !== undefined);
  await Promise.all(
    workers.map(
      (worker) =>
        new Promise<void>((resolve) => {
          if (worker.isDead()) {
            resolve();
            return;
          }
          worker.once('exit', () => resolve());
          worker.process.kill('SIGTERM');
        }),
    ),
  );
  stopQuota();
  stop.dispose();
  if (outcome.code !== undefined) process.exitCode = outcome.code;
}

export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env.SLIPWAY_CLUSTER_WORKER === '1';
}
