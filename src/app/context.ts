import type { Config } from '../config/env.js';
import { Events } from '../events.js';
import { createLogger, type Logger } from '../log.js';
import { loadPipelineFile, resolvePipelinesPath } from '../pipeline/load.js';
import type { PipelineFile } from '../pipeline/types.js';
import { openStore, type Store } from '../store/database.js';
import type { GitHubService } from '../github/service.js';

/** What every role of one process shares. */
export interface AppContext {
  config: Config;
  logger: Logger;
  store: Store;
  events: Events;
  pipelines: PipelineFile;
  pipelinesPath: string;
  /** GitHub client, status sender and variable sync; created by the API's GitHub routes. */
  github?: GitHubService;
}

export interface ContextOptions {
  logger?: Logger;
}

/**
 * Opens what a role needs: the logger, the migrated store and the pipeline file. Throws
 * PipelineFileError (naming file, line and field) when the pipeline file is invalid.
 */
export async function createContext(
  config: Config,
  options: ContextOptions = {},
): Promise<AppContext> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const pipelinesPath = resolvePipelinesPath(config.pipelinesPath);
  const pipelines = loadPipelineFile(pipelinesPath);
  const store = await openStore(config.dbPath, {
    logger,
    commitDelayMs: config.api.commitDelayMs,
  });
  return { config, logger, store, events: new Events(), pipelines, pipelinesPath };
}
