/**
 * Tokens that `slipway serve` makes for its in-process worker: a new process deletes those of
 * processes on this host that no longer run, judged by real pids.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/database.js';
import { createToken } from '../../src/store/tokens.js';
import { removeOrphanedSelfTokens } from '../../src/worker/role.js';
import { makeTempDir } from '../support/server.js';

function exitedPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  return new Promise((resolve) => child.once('exit', () => resolve(child.pid!)));
}

/**
 * Starts a process whose child has exited but is not reaped (a zombie) and returns both. The
 * shell prints the child's pid, then becomes `sleep`, which never waits for it.
 */
function startZombieParent(): Promise<{ parent: ReturnType<typeof spawn>; zombie: number }> {
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 60']);
  return new Promise((resolve) => {
    parent.stdout!.once('data', (chunk: Buffer) => {
      resolve({ parent, zombie: Number(chunk.toString().trim()) });
    });
  });
}

describe('self tokens of killed serve processes', () => {
  let store: Store;
  let sleeper: ReturnType<typeof spawn>;
  let zombieParent: ReturnType<typeof spawn>;
  let zombie: number;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir(), 'tokens.db'));
    sleeper = spawn('sleep', ['60']);
    ({ parent: zombieParent, zombie } = await startZombieParent());
  });
  afterAll(async () => {
    sleeper.kill('SIGKILL');
    zombieParent.kill('SIGKILL');
    await store.close();
  });

  it('removes only the tokens of this host whose process is gone', async () => {
    const dead = await exitedPid();
    const host = os.hostname();
    const names = {
      dead: `in-process-worker-${host}-${dead}-0a1b`,
      live: `in-process-worker-${host}-${sleeper.pid}-2c3d`,
      // The sleeper started after this token was made: its pid was reused.
      reused: `in-process-worker-${host}-${sleeper.pid}-6a7b`,
      otherHost: `in-process-worker-elsewhere.example-${dead}-4e5f`,
      // Killed, but its parent has not reaped it yet.
      zombie: `in-process-worker-${host}-${zombie}-8c9d`,
      older: 'in-process-worker-1a2b3c4d',
    };
    await store.write(async (trx) => {
      for (const name of Object.values(names)) await createToken(trx, name, 'agent');
      const anHourAgo = new Date(Date.now() - 3_600_000).toISOString();
      await trx
        .updateTable('api_tokens')
        .set({ created_at: anHourAgo })
        .where('name', '=', names.reused)
        .execute();
    });

    const revoked = await store.write((trx) => removeOrphanedSelfTokens(trx));
    expect(revoked.sort()).toEqual([names.dead, names.reused, names.zombie].sort());

    const rows = await store.db
      .selectFrom('api_tokens')
      .select(['name'])
      .select((eb) => eb('revoked_at', 'is not', null).as('revoked'))
      .orderBy('id')
      .execute();
    expect(rows).toEqual([
      { name: names.live, revoked: 0 },
      { name: names.otherHost, revoked: 0 },
      { name: names.older, revoked: 0 },
    ]);
    const audit = await store.db
      .selectFrom('audit_log')
      .select(['action', 'details'])
      .where('action', '=', 'token_revoked')
      .execute();
    expect(audit.map((row) => JSON.parse(row.details).token).sort()).toEqual(
      [names.dead, names.reused, names.zombie].sort(),
    );
  });

  it('leaves everything alone on a second pass', async () => {
    expect(await store.write((trx) => removeOrphanedSelfTokens(trx))).toEqual([]);
  });
});
