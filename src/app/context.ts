import type { Config } from '../config/env.js';
import type { Events } from '../events.js';
import type { Logger } from '../log.js';
import type { PipelineFile } from '../pipeline/types.js';
import type { Store } from '../store/database.js';

/** What every role of one process shares. */
export interface AppContext {
  config: Config;
  logger: Logger;
  store: Store;
  events: Events;
  pipelines: PipelineFile;
}
