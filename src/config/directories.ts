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

/** Kernel file systems: nothing can be created there, and mkdir under /proc can spin forever. */
const KERNEL_FILE_SYSTEMS = ['/proc', '/sys'];

/**
 * Creates every directory of the configuration. Throws ConfigError naming the first that fails.
 * Directories it creates are readable only by their owner, because they hold the database,
 * its backups and the logs.
 */
export function prepareDirectories(config: Config): void {
  for (const [variable, directory] of directoriesOf(config)) {
    const absolute = path.resolve(directory);
    const kernel = KERNEL_FILE_SYSTEMS.find(
      (root) => absolute === root || absolute.startsWith(`${root}/`),
    );
    if (kernel !== undefined) {
      throw new ConfigError(
        variable,
        `"${directory}" is under ${kernel}, a kernel file system that cannot hold files; point ${variable} at a writable directory`,
      );
    }
    try {
      fs.mkdirSync(directory, { recursive: true, mode: 0o700 });
      fs.accessSync(directory, fs.constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // mkdir reports EEXIST when a part of the path is a file, which reads as if the folder
      // existed. ENOTDIR is the same case from access.
      const reason =
        code === 'EEXIST' || code === 'ENOTDIR'
          ? `${code}: a part of the path is a file, not a directory`
          : (code ?? String(error));
      throw new ConfigError(
        variable,
        `cannot create or write to the directory "${directory}" (${reason}); point ${variable} at a writable directory`,
      );
    }
  }
}
