/**
 * The roles a process can run: api, orchestrator, health-monitor and worker. Each starter
 * returns a handle whose `stop` finishes in-flight work and releases what the role uses.
 * `runRolesUntilSignal` stops them in reverse order on SIGTERM, SIGINT or SIGHUP, then closes the store.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { listenForStop } from './stop-signals.js';
import type { FastifyInstance } from 'fastify';
import { buildServer, type RouteModule } from '../api/server.js';
import { ConfigError, type Role } from '../config/env.js';
import type { AppContext } from './context.js';
import { ADMIN_TOKEN_FILE, ensureAdminToken } from './admin-token.js';
import { ensureAgentToken } from './agent-token.js';
import { markApiServing, registerRunningProcess } from '../store/running-processes.js';
import { renewLeasesOnStart, type StartRenewal } from '../orchestrator/leases.js';
import { startOrchestrator } from '../orchestrator/role.js';
import { startHealthMonitor } from '../health/monitor.js';
import { isClusterWorker } from './cluster.js';
import { startWorker } from '../worker/role.js';
import { killLiveSteps } from '../execution/local.js';

export interface RunningRole {
  name: string;
  stop(): Promise<void>;
}

export type RoleStarter = (context: AppContext) => Promise<RunningRole>;

/** Route modules that other roles' packages add to the API (agent endpoints, webhooks). */
export const EXTRA_ROUTES: RouteModule[] = [];

export interface ApiRole extends RunningRole {
  app: FastifyInstance;
  url: string;
}

export async function startApi(context: AppContext): Promise<ApiRole> {
  const { config, logger } = context;
  // In a cluster the primary has already made sure of the admin token.
  const admin = isClusterWorker()
    ? { file: undefined }
    : await ensureAdminToken(config, context.store, logger);
  if (!isClusterWorker()) await ensureAgentToken(config, context.store, logger);
  const app = await buildServer(context, { routes: EXTRA_ROUTES });
  try {
    await app.listen({ host: config.api.host, port: config.api.port });
  } catch (error) {
    await app.close();
    throw listenError(error, config.api.host, config.api.port);
  }
  let renewal: StartRenewal;
  try {
    renewal = await renewLeasesOnStart(context, { actor: 'api', source: os.hostname() });
  } catch (error) {
    await app.close();
    throw error;
  }
  if (renewal.renewed > 0) {
    logger.info(
      { tasks: renewal.renewed },
      `renewed the leases of ${renewal.renewed} running task(s) until their workers report`,
    );
  }
  context.apiServing = true;
  const unmarked = markApiServing(context.store.path, true);
  if (unmarked !== undefined) {
    logger.warn(
      { err: unmarked },
      'could not mark this API as serving in the process registry; an orchestrator in ' +
        'another process recovers no leases until it can',
    );
  }
  if (renewal.notRenewed > 0) {
    logger.warn(
      { tasks: renewal.notRenewed },
      `left the leases of ${renewal.notRenewed} running task(s) as they were: an earlier start ` +
        'renewed them and their workers have not reported since, so they are recovered ' +
        'when those leases expire',
    );
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.api.port;
  const url = `http://${config.api.host.includes(':') ? `[${config.api.host}]` : config.api.host}:${port}`;
  context.localApiUrl = url.replace('://0.0.0.0:', '://127.0.0.1:');
  logger.info(
    { url, docs: `${url}/api/docs`, db: context.store.path, pipelines: context.pipelinesPath },
    `API listening on ${url}`,
  );
  if (admin.file !== undefined) {
    logger.info(
      { file: admin.file },
      `an admin token was created and written to ${admin.file}; read it with: cat ${admin.file}`,
    );
  } else if (!isClusterWorker() && config.api.adminToken === undefined) {
    // A later start creates no token, so it logs again where the first one is.
    const file = path.join(config.dataDir, ADMIN_TOKEN_FILE);
    if (fs.existsSync(file)) {
      logger.info({ file }, `the admin token made at the first start is in ${file}`);
    }
  }
  return {
    name: 'api',
    app,
    url,
    async stop() {
      // Lease recovery pauses from here until an API serves again (see apiServing).
      context.apiServing = false;
      const failed = markApiServing(context.store.path, false);
      if (failed !== undefined) {
        logger.warn({ err: failed }, 'could not clear the serving mark in the process registry');
      }
      await app.close();
    },
  };
}

/** Names the setting behind a failed listen, so the operator knows what to change. */
function listenError(error: unknown, host: string, port: number): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  const where = `${host}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new ConfigError(
        'API_PORT',
        `${where} is already in use, perhaps by another Slipway; stop it or choose another port`,
      );
    case 'EACCES':
      return new ConfigError(
        'API_PORT',
        `no permission to listen on ${where}; use a port above 1023`,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError('API_HOST', `"${host}" does not resolve to an address of this host`);
    case 'EADDRNOTAVAIL':
      return new ConfigError('API_HOST', `"${host}" is not an address of this host`);
    default:
      return error;
  }
}

/** Starters for each role; packages that implement a role add themselves here. */
export const ROLE_STARTERS: Partial<Record<Exclude<Role, 'all'>, RoleStarter>> = {
  api: startApi,
  orchestrator: startOrchestrator,
  'health-monitor': startHealthMonitor,
  worker: startWorker,
};

/**
 * What `slipway serve` runs in one process, in start order. The worker starts right after the
 * API, so that it has registered before the health monitor's first `workers` check. Roles stop
 * in reverse order, so the worker hands back its tasks while the API still listens.
 */
export const SERVE_ROLES: Exclude<Role, 'all'>[] = [
  'api',
  'worker',
  'orchestrator',
  'health-monitor',
];

export async function startRoles(
  context: AppContext,
  roles: readonly Exclude<Role, 'all'>[],
): Promise<RunningRole[]> {
  let registration: RunningRole;
  try {
    registration = registerRunningProcess(context.store.path, roles);
  } catch (error) {
    // The open store's checkpoint thread would keep the process alive after the error.
    await context.store.close();
    throw error;
  }
  const running: RunningRole[] = [registration];
  try {
    for (const role of roles) {
      const start = ROLE_STARTERS[role];
      if (start === undefined) {
        context.logger.warn({ role }, `role ${role} is not available in this build`);
        continue;
      }
      running.push(await start(context));
    }
  } catch (error) {
    await stopRoles(context, running);
    throw error;
  }
  return running;
}

export async function stopRoles(context: AppContext, running: RunningRole[]): Promise<void> {
  for (const role of [...running].reverse()) {
    try {
      await role.stop();
      context.logger.info({ role: role.name }, `${role.name} stopped`);
    } catch (error) {
      context.logger.error({ err: error, role: role.name }, `${role.name} did not stop cleanly`);
    }
  }
  await context.store.close();
}

/**
 * Runs roles until SIGTERM, SIGINT or SIGHUP, then stops them and resolves. The handlers are installed
 * before the first role starts, because a signal can arrive while later roles are starting
 * (the worker logs its registration first). Node's default action would end the process.
 */
export async function runRolesUntilSignal(
  context: AppContext,
  roles: readonly Exclude<Role, 'all'>[],
): Promise<void> {
  // An API process of a cluster gets a signal sent to the whole group (Ctrl-C in a terminal,
  // systemd's default KillMode=control-group) and then the SIGTERM its primary forwards. So
  // only the primary ends a slow stop: it exits on its own second signal, and Node's cluster
  // module then ends each API process as the channel to the primary closes.
  const inCluster = isClusterWorker();
  const stop = listenForStop((signal) => {
    if (inCluster) {
      context.logger.info({ signal }, `received ${signal} again, still stopping`);
      return;
    }
    // The steps would run on after the exit, beside their next attempt.
    const killed = killLiveSteps();
    context.logger.error(
      { signal, local_steps_killed: killed },
      `received ${signal} again, exiting now: tasks still running here are not handed back ` +
        'and run again, or end error when they have side effects, once their leases expire; ' +
        `${killed} local step(s) were killed`,
    );
  }, !inCluster);
  try {
    if (stop.early !== undefined) {
      context.logger.info(
        { signal: stop.early },
        `received ${stop.early} while starting, stopping`,
      );
      await context.store.close();
      return;
    }
    const running = await startRoles(context, roles);
    const signal = await stop.received;
    context.logger.info({ signal }, `received ${signal}, stopping`);
    await stopRoles(context, running);
  } finally {
    stop.dispose();
  }
}
