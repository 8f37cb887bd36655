/** `slipway run-task NAME`, `slipway backup [--output PATH]` and `slipway restore FILE`. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { createContext } from '../app/context.js';
import type { Config } from '../config/env.js';
import { createLogger } from '../log.js';
import {
  backupDatabase,
  findDatabaseFileAt,
  pruneBackups,
  RestoreRejected,
  restoreDatabase,
  scheduledBackupName,
  undoRestore,
} from '../orchestrator/backup.js';
import { scheduledTasks } from '../orchestrator/role.js';
import { Scheduler } from '../orchestrator/scheduler.js';
import { appendAudit } from '../store/audit.js';
import { openStore } from '../store/database.js';
import { cliAudit, CliError, loadCliConfig, loadRoleConfig, runCommand } from './run.js';

/**
 * Throws CliError when the database file does not exist. Opening the store would create an
 * empty database, so a backup of a mistyped data directory would succeed and copy nothing.
 */
function requireDatabase(config: Config): void {
  if (fs.existsSync(config.dbPath)) return;
  throw new CliError(
    `database ${config.dbPath} not found, so there is nothing to back up. Set SLIPWAY_DATA_DIR ` +
      '(or ORCHESTRATION_DB_PATH) to the data directory of the Slipway to back up',
    2,
  );
}

/**
 * Returns the file `slipway backup` writes: `output`, or a new file named like a scheduled
 * backup inside `output` when it is a directory or ends with a slash, or a new file in
 * ORCHESTRATION_BACKUP_PATH without `output`.
 */
function backupTarget(config: Config, output: string | undefined): string {
  if (output === undefined) return path.resolve(config.backupPath, scheduledBackupName());
  const isDirectory = output.endsWith(path.sep) || isExistingDirectory(output);
  return path.resolve(isDirectory ? path.join(output, scheduledBackupName()) : output);
}

function isExistingDirectory(file: string): boolean {
  try {
    return fs.statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** Opens the restored database, which applies pending migrations, and audits the restore. */
async function recordRestore(
  dbPath: string,
  source: string,
  previous: string | null,
  revocationsKept: string[],
) {
  const store = await openStore(dbPath, { logger: createLogger('warn') });
  try {
    await store.write((trx) =>
      appendAudit(trx, cliAudit(), {
        action: 'database_restored',
        details: { source, previous, revocations_kept: revocationsKept },
      }),
    );
  } finally {
    await store.close();
  }
}

/** Puts the previous database back after a restore failed past the swap; returns the CLI error. */
function undoFailedRestore(dbPath: string, previous: string | null, error: unknown): CliError {
  const reason = error instanceof Error ? error.message : String(error);
  try {
    undoRestore(dbPath, previous);
  } catch (undoError) {
    const manualStep =
      previous === null ? '' : ` The previous database is ${previous}; move it to ${dbPath}.`;
    return new CliError(
      `restore failed after replacing the database (${reason}), and putting the previous ` +
        `database back failed too: ${(undoError as Error).message}.${manualStep}`,
    );
  }
  const undone =
    previous === null
      ? `there was no database before, so the restored file was removed`
      : `the previous database was put back at ${dbPath}`;
  return new CliError(`restore failed after replacing the database, so ${undone}: ${reason}`);
}

export function registerOrchestratorCommands(program: Command): void {
  program
    .command('run-task')
    .description(
      'run a scheduled task now (sweep, cleanup, backup, and health-checks unless the ' +
        "pipeline file's health_checks list is empty) unless another process runs it",
    )
    .argument('<name>', 'task name')
    .action(async (name: string) => {
      await runCommand(async () => {
        const config = loadCliConfig();
        if (name === 'backup') requireDatabase(config);
        // The summary goes to stdout, so the log goes to stderr.
        const context = await createContext(config, {
          syncDependencies: false,
          logger: createLogger(config.logLevel, 'slipway', 2),
        });
        try {
          const scheduler = new Scheduler(context, scheduledTasks(context));
          if (!scheduler.tasks.some((task) => task.name === name)) {
            const known = scheduler.tasks.map((task) => task.name).join(', ');
            if (name === 'health-checks') {
              throw new CliError(
                `the pipeline file ${context.pipelinesPath} has an empty health_checks list, so ` +
                  'there is no health-checks task; add checks to it, or remove it to get the ' +
                  'default checks (see docs/health.md)',
                2,
              );
            }
            throw new CliError(`unknown task "${name}"; tasks: ${known}`, 2);
          }
          const result = await scheduler.runTask(name);
          if (!result.ran) throw new CliError(`task ${name} not started: ${result.reason}`);
          if (!result.ok) throw new CliError(`task ${name} failed: ${result.error.message}`);
          process.stdout.write(
            `${JSON.stringify({ task: name, duration_ms: result.durationMs, ...result.summary })}\n`,
          );
        } finally {
          await context.store.close();
        }
      });
    });

  program
    .command('backup')
    .description('copy the database while Slipway runs (SQLite online backup) and check it')
    .option(
      '--output <path>',
      'file to write the copy to, or a directory to write a new file into ' +
        '(default: a new file in ORCHESTRATION_BACKUP_PATH)',
    )
    .action(async (options: { output?: string }) => {
      await runCommand(async () => {
        const config = loadCliConfig();
        const target = backupTarget(config, options.output);
        const clash = findDatabaseFileAt(config.dbPath, target);
        if (clash !== null) {
          throw new CliError(
            `--output ${target} is the database file ${clash}. A backup must not replace the ` +
              'database or its -wal, -shm or -journal file, so choose another path',
            2,
          );
        }
        requireDatabase(config);
        const store = await openStore(config.dbPath, { logger: createLogger('warn') });
        try {
          const result = await backupDatabase(config.dbPath, target);
          const pruned =
            options.output === undefined
              ? pruneBackups(config.backupPath, config.retention.backupsKept)
              : [];
          await store.write((trx) =>
            appendAudit(trx, cliAudit(), {
              action: 'backup_created',
              details: { path: result.path, bytes: result.bytes, pruned },
            }),
          );
          process.stdout.write(
            `${JSON.stringify({ path: result.path, bytes: result.bytes, duration_ms: result.durationMs })}\n`,
          );
        } finally {
          await store.close();
        }
      });
    });

  program
    .command('restore')
    .description(
      'replace the database with a backup; rejected while a Slipway process uses the database',
    )
    .argument('<file>', 'a backup made by slipway backup')
    .action(async (file: string) => {
      await runCommand(async () => {
        // Creates the data directories as a start does, so they are readable only by their owner.
        const config = loadRoleConfig();
        const source = path.resolve(file);
        let previous: string | null;
        let revocationsKept: string[];
        try {
          ({ previous, revocationsKept } = restoreDatabase(config.dbPath, source));
        } catch (error) {
          if (error instanceof RestoreRejected)
            throw new CliError(`restore rejected: ${error.message}`);
          throw error;
        }
        try {
          await recordRestore(config.dbPath, source, previous, revocationsKept);
        } catch (error) {
          throw undoFailedRestore(config.dbPath, previous, error);
        }
        process.stdout.write(
          `${JSON.stringify({ restored: config.dbPath, source, previous, revocations_kept: revocationsKept })}\n`,
        );
      });
    });
}
