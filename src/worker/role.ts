/**
 * The `worker` role. `slipway worker` talks to SLIPWAY_API_URL with SLIPWAY_AGENT_TOKEN.
 * In `slipway serve` the worker runs next to the API in the same process, still over HTTP,
 * with an agent token the process creates for itself and revokes when it stops.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { ConfigError } from '../config/env.js';
import { MirrorSet } from '../execution/checkout.js';
import { selectExecutors } from '../execution/select.js';
import { appendAudit } from '../store/audit.js';
import { createToken, revokeToken } from '../store/tokens.js';
import { AgentClient } from './client.js';
import { Worker } from './worker.js';

export async function startWorker(context: AppContext): Promise<RunningRole> {
  const { config, logger } = context;
  const local = config.worker.token === undefined ? context.localApiUrl : undefined;
  let token = config.worker.token;
  let selfTokenName: string | undefined;
  if (token === undefined) {
    if (local === undefined) {
      throw new ConfigError(
        'SLIPWAY_AGENT_TOKEN',
        'is required for `slipway worker`; create one with `slipway token create --role agent --name <worker>`',
      );
    }
    selfTokenName = `in-process-worker-${randomBytes(4).toString('hex')}`;
    token = await createSelfToken(context, selfTokenName);
  }
  const apiUrl = local ?? config.worker.apiUrl;
  // An explicit SLIPWAY_WORKER_NAME is the worker id, and the API rejects a second running
  // process with it. Without one, the id adds the pid and a random suffix to the host name,
  // so that two processes on one host never share a worker row.
  const defaultName = local === undefined ? os.hostname() : `${os.hostname()}-serve`;
  const name = config.worker.name ?? defaultName;
  const id =
    config.worker.name ?? `${defaultName}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const executors = await selectExecutors(config, logger);
  const worker = new Worker(
    new AgentClient(apiUrl, token),
    executors,
    new MirrorSet(config.worker.mirrorPath),
    {
      id,
      name,
      capacity: config.worker.capacity,
      labels: [],
      shutdownGraceSeconds: config.worker.shutdownGraceSeconds,
      workspacesRoot: config.workspacePath,
    },
    logger,
  );
  await worker.start();
  return {
    name: 'worker',
    async stop() {
      await worker.stop();
      if (selfTokenName !== undefined) {
        await context.store.write((trx) => revokeToken(trx, selfTokenName));
      }
    },
  };
}

async function createSelfToken(context: AppContext, name: string): Promise<string> {
  return context.store.write(async (trx) => {
    const created = await createToken(trx, name, 'agent');
    await appendAudit(
      trx,
      { actor: 'serve', source: os.hostname() },
      { action: 'token_created', details: { name, role: 'agent', prefix: created.row.prefix } },
    );
    return created.token;
  });
}
