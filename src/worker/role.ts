/**
 * The `worker` role. `slipway worker` talks to SLIPWAY_API_URL with SLIPWAY_AGENT_TOKEN.
 * In `slipway serve` the worker runs next to the API in the same process, still over HTTP,
 * with an agent token the process creates for itself and deletes when it stops. A process
 * that was killed could not delete its token, so each new one first deletes the tokens of
 * in-process workers on this host whose process no longer runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { ConfigError } from '../config/env.js';
import { MirrorSet } from '../execution/checkout.js';
import { selectExecutors } from '../execution/select.js';
import { appendAudit } from '../store/audit.js';
import type { Database } from '../store/schema.js';
import { createToken } from '../store/tokens.js';
import { processStartTicks } from '../util/proc.js';
import { nowIso } from '../util/time.js';
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
    selfTokenName = `${selfTokenPrefix()}${process.pid}-${randomBytes(2).toString('hex')}`;
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
        const name = selfTokenName;
        await context.store.write((trx) => removeSelfToken(trx, name, 'serve stopped'));
      }
    },
  };
}

/** Names of self tokens are this prefix, the pid and four hex digits. */
const SELF_TOKEN_TAIL = /^(\d+)-[0-9a-f]{4}$/;

function selfTokenPrefix(host = os.hostname()): string {
  return `in-process-worker-${host}-`;
}

/**
 * Deletes the active self tokens of this host whose process is gone, each with an audit row,
 * retires their workers (see retireWorkers), and returns the tokens' names. A token's process
 * is gone when its pid runs nothing, or runs a process that started after the token was made:
 * in a restarted container the new process often gets the old pid. Tokens named before names
 * carried the pid are not touched.
 */
export async function removeOrphanedSelfTokens(
  trx: Kysely<Database>,
  startedAt: (pid: number) => number | undefined = processStartTime,
): Promise<string[]> {
  const prefix = selfTokenPrefix();
  const rows = await trx
    .selectFrom('api_tokens')
    .select(['id', 'name', 'created_at'])
    .where('role', '=', 'agent')
    .where('revoked_at', 'is', null)
    .where('name', 'like', `${prefix}%`)
    .execute();
  const orphaned = rows.filter((row) => {
    // LIKE also matches _ and % in the host name as wildcards, so compare exactly here.
    const match = row.name.startsWith(prefix)
      ? SELF_TOKEN_TAIL.exec(row.name.slice(prefix.length))
      : null;
    if (match === null) return false;
    const started = startedAt(Number(match[1]));
    return started === undefined || started > Date.parse(row.created_at) + START_SLACK_MS;
  });
  const reason = 'its serve process is no longer running';
  for (const row of orphaned) {
    await retireWorkers(trx, row.id, row.name, reason);
    await removeSelfToken(trx, row.name, reason);
  }
  return orphaned.map((row) => row.name);
}

/**
 * Marks offline the workers registered with a self token whose process is gone, and ends the
 * leases of their running tasks now, with audit rows. Waiting out the leases would only keep
 * those tasks `running` with nothing behind them. The watchdog's next pass recovers them as
 * after any expired lease, and removes their containers.
 */
async function retireWorkers(
  trx: Kysely<Database>,
  tokenId: number,
  tokenName: string,
  reason: string,
): Promise<void> {
  const workers = await trx
    .updateTable('workers')
    .set({ status: 'offline' })
    .where('token_id', '=', tokenId)
    .where('status', '!=', 'offline')
    .returning(['id', 'hostname', 'last_heartbeat_at'])
    .execute();
  const now = nowIso();
  for (const worker of workers) {
    const tasks = await trx
      .updateTable('tasks')
      .set({ lease_expires_at: now, updated_at: now })
      .where('worker_id', '=', worker.id)
      .where('status', '=', 'running')
      .returning(['id'])
      .execute();
    await appendAudit(trx, SERVE_ACTOR, {
      action: 'worker_marked_offline',
      details: {
        worker_id: worker.id,
        hostname: worker.hostname,
        last_heartbeat_at: worker.last_heartbeat_at,
        token: tokenName,
        leases_ended: tasks.map((task) => task.id),
        reason,
      },
    });
  }
}

/**
 * Deletes a self token with an audit row. Each serve start makes one, so keeping them as
 * revoked rows would fill `slipway token list` with tokens that no process can use again.
 */
async function removeSelfToken(trx: Kysely<Database>, name: string, reason: string) {
  const result = await trx.deleteFrom('api_tokens').where('name', '=', name).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) return;
  await appendAudit(trx, SERVE_ACTOR, {
    action: 'token_revoked',
    details: { token: name, count: 1, reason, deleted: true },
  });
}

/** Start times from /proc are in clock ticks (100 per second on Linux); allow for rounding. */
const START_SLACK_MS = 1_000;
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * When the process with this pid started, in milliseconds since the epoch, or undefined when
 * no running process has the pid. Reads /proc; elsewhere a running pid counts as started long
 * ago.
 */
function processStartTime(pid: number): number | undefined {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: the pid exists but belongs to another user.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  const ticks = processStartTicks(pid);
  // With /proc, no start time means the process has exited and waits to be reaped.
  if (ticks === undefined) return fs.existsSync('/proc/self/stat') ? undefined : 0;
  try {
    const bootLine = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
    if (bootLine === null) return 0;
    return Number(bootLine[1]) * 1000 + (ticks / CLOCK_TICKS_PER_SECOND) * 1000;
  } catch {
    return 0;
  }
}

const SERVE_ACTOR = { actor: 'serve', source: os.hostname() };

async function createSelfToken(context: AppContext, name: string): Promise<string> {
  return context.store.write(async (trx) => {
    const orphaned = await removeOrphanedSelfTokens(trx);
    if (orphaned.length > 0) {
      context.logger.info(
        { revoked: orphaned },
        'revoked the tokens of killed in-process workers and ended their leases',
      );
    }
    const created = await createToken(trx, name, 'agent');
    await appendAudit(trx, SERVE_ACTOR, {
      action: 'token_created',
      details: { name, role: 'agent', prefix: created.row.prefix },
    });
    return created.token;
  });
}
