/** Role subcommands: serve, api, orchestrator, health-monitor, worker, init-db. */
import cluster from 'node:cluster';
import type { Command } from 'commander';
import { isClusterWorker, runApiPrimary } from '../app/cluster.js';
import { createContext } from '../app/context.js';
import { runRolesUntilSignal, SERVE_ROLES } from '../app/roles.js';
import { ConfigError, type Role } from '../config/env.js';
import { createLogger } from '../log.js';
import { openStore } from '../store/database.js';
import { loadCliConfig, loadRoleConfig, runCommand } from './run.js';

type SingleRole = Exclude<Role, 'all'>;

async function runRoles(roles: readonly SingleRole[]): Promise<void> {
  await runCommand(async () => {
    const config = loadRoleConfig();
    // A worker talks only to the API. Its data directory may be the server's, whose schema
    // and dependency rules it must leave alone.
    const workerOnly = roles.length === 1 && roles[0] === 'worker';
    try {
      const context = await createContext(
        config,
        workerOnly ? { migrate: false, syncDependencies: false } : {},
      );
      await runRolesUntilSignal(context, roles);
    } finally {
      // The IPC channel to the cluster primary keeps a stopped API process alive, or one that
      // failed to start, and the primary waits for every process to exit before it exits.
      // Unlike process.disconnect, which makes the process exit with 0 at once, this lets it
      // end with the exit code of its error.
      if (isClusterWorker()) cluster.worker?.disconnect();
    }
  });
}

/**
 * Runs the roles, or the primary of an API cluster when the API is the only role and
 * API_WORKERS is above 1. Other roles beside the API would run once in each API process, so
 * that combination is a configuration error.
 */
async function runRoleCommand(roles: readonly SingleRole[]): Promise<void> {
  const config = loadRoleConfig();
  if (config.api.workers > 1 && !isClusterWorker() && roles.includes('api')) {
    await runCommand(async () => {
      if (roles.length > 1) {
        throw new ConfigError(
          'API_WORKERS',
          `must be 1 when one process runs the API with other roles, got ${config.api.workers}; ` +
            'for several API processes, run `slipway api` (or `slipway serve` with ' +
            'ORCHESTRATION_MODE=api) and the other roles as commands of their own',
        );
      }
      await runApiPrimary(config);
    });
    return;
  }
  await runRoles(roles);
}

export function registerRoleCommands(program: Command): void {
  program
    .command('serve', { isDefault: false })
    .description(
      'run every role in one process: API, orchestrator, health monitor and a worker ' +
        '(or only the role ORCHESTRATION_MODE names)',
    )
    .action(async () => {
      const mode = loadCliConfig().mode;
      await runRoleCommand(mode === undefined || mode === 'all' ? SERVE_ROLES : [mode]);
    });

  const single: [SingleRole, string][] = [
    ['api', 'run the HTTP API'],
    ['orchestrator', 'run dependency resolution, lease recovery, sweeps, cleanup and backups'],
    ['health-monitor', 'run health checks, record metrics and heal services'],
    ['worker', 'claim tasks from the API and run them'],
  ];
  for (const [role, description] of single) {
    program
      .command(role)
      .description(description)
      .action(() => runRoleCommand([role]));
  }

  program
    .command('init-db')
    .description('create or migrate the database schema and the default dependencies, then exit')
    .action(async () => {
      await runCommand(async () => {
        const config = loadCliConfig();
        const logger = createLogger(config.logLevel);
        const store = await openStore(config.dbPath, { logger });
        const migrations = await store.db.selectFrom('schema_migrations').select('name').execute();
        await store.close();
        process.stdout.write(
          `database ${config.dbPath} is at the latest schema (${migrations.length} migrations)\n`,
        );
      });
    });
}
