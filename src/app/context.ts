import { ConfigError, type Config } from '../config/env.js';
import { Events } from '../events.js';
import { createLogger, type Logger } from '../log.js';
import { loadPipelineFile, resolvePipelinesPath } from '../pipeline/load.js';
import type { PipelineFile } from '../pipeline/types.js';
import { syncDependencies } from '../orchestrator/dependency-sync.js';
import { openStore, type Store } from '../store/database.js';
import type { GitHubService } from '../github/service.js';

/** Services that every role of one process shares. */
export interface AppContext {
  config: Config;
  logger: Logger;
  store: Store;
  events: Events;
  pipelines: PipelineFile;
  pipelinesPath: string;
  /** URL of the API this process serves, once the api role listens (the in-process worker uses it). */
  localApiUrl?: string;
  /** True while this process's API serves workers: from after its lease renewal until its stop. */
  apiServing?: boolean;
  /** GitHub client, status sender and variable sync; created by the API's GitHub routes. */
  github?: GitHubService;
}

export interface ContextOptions {
  logger?: Logger;
  /**
   * Write the pipeline file's dependencies to the database (default true). One-off commands
   * pass false, so a command run with another pipeline file leaves the running roles' rules.
   */
  syncDependencies?: boolean;
  /**
   * Apply pending migrations (default true). A process that runs only a worker passes false:
   * it never uses the database, which may be the server's when both share a data directory.
   */
  migrate?: boolean;
}

/**
 * Opens what a role needs: the logger, the migrated store and the pipeline file. Throws
 * PipelineFileError (naming file, line and field) when the pipeline file is invalid, and
 * ConfigError when ORCHESTRATION_DB_PATH is not a SQLite database that can be opened.
 */
export async function createContext(
  config: Config,
  options: ContextOptions = {},
): Promise<AppContext> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const pipelinesPath = resolvePipelinesPath(config.pipelinesPath);
  const pipelines = loadPipelineFile(pipelinesPath);
  const store = await openConfiguredStore(config, logger, options.migrate !== false);
  if (options.syncDependencies !== false) await syncDependencies(store, pipelines, logger);
  return { config, logger, store, events: new Events(), pipelines, pipelinesPath };
}

/**
 * SQLite result codes that mean the path is wrong rather than the database being busy. An
 * extended code such as SQLITE_CANTOPEN_ISDIR starts with its primary code.
 */
const UNOPENABLE = ['SQLITE_CANTOPEN', 'SQLITE_NOTADB', 'SQLITE_READONLY', 'SQLITE_PERM'];

function isUnopenable(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return false;
  return UNOPENABLE.some((primary) => code === primary || code.startsWith(`${primary}_`));
}

async function openConfiguredStore(
  config: Config,
  logger: Logger,
  migrate: boolean,
): Promise<Store> {
  try {
    return await openStore(config.dbPath, {
      logger,
      migrate,
      commitDelayMs: config.api.commitDelayMs,
      backgroundCheckpoints: true,
    });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      // openStore's message names the file, the cause and the fix (see explainOpenError).
      throw new ConfigError('ORCHESTRATION_DB_PATH', (error as Error).message);
    }
    if (isUnopenable(error)) {
      // SQLite's own message: the explanation that openStore adds repeats the path.
      const cause = (error as Error).cause;
      const message = cause instanceof Error ? cause.message : (error as Error).message;
      throw new ConfigError(
        'ORCHESTRATION_DB_PATH',
        `cannot open "${config.dbPath}" as a SQLite database (${message})`,
      );
    }
    throw error;
  }
}
