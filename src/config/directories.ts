/**
 * Creates the directories a process writes to and checks that it can write there, at start,
 * so a bad path stops the process with the variable's name rather than failing later.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from './env.js';

/** Lists each directory with its variable, the data directory first because the others default to it. */
function directoriesOf(config: Config): Array<[variable: string, directory: string]> {
  return [
    ['SLIPWAY_DATA_DIR', config.dataDir],
    ['ORCHESTRATION_DB_PATH', path.dirname(config.dbPath)],
    ['ORCHESTRATION_LOG_PATH', config.logPath],
    ['ORCHESTRATION_WORKSPACE_PATH', config.workspacePath],
    ['ORCHESTRATION_ARTIFACTS_PATH', config.artifactsPath],
    ['ORCHESTRATION_BACKUP_PATH', config.backupPath],
    ['SLIPWAY_MIRROR_PATH', config.worker.mirrorPath],
  ];
}

/** Creates every directory of the configuration. Throws ConfigError naming the first that fails. */
export function prepareDirectories(config: Config): void {
  for (const [variable, directory] of directoriesOf(config)) {
    try {
      fs.mkdirSync(directory, { recursive: true });
      fs.accessSync(directory, fs.constants.W_OK);
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new ConfigError(
        variable,
        `cannot create or write to the directory "${directory}" (${reason}); point ${variable} at a writable directory`,
      );
    }
  }
}
