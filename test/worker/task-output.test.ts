/**
 * TaskOutput against an API that is away for a while: uploads are retried until one succeeds,
 * and the failures are logged once rather than once per retry.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/worker/client.js';
import { TaskOutput } from '../../src/worker/task-output.js';

describe('task output uploads', () => {
  let server: http.Server;
  let url: string;
  let failuresLeft = 0;
  const received: string[] = [];

  beforeAll(async () => {
    // Responds as Slipway's API does while it restarts behind a proxy: 503, then the real response.
    server = http.createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        if (failuresLeft > 0) {
          failuresLeft -= 1;
          response.writeHead(503, { 'content-type': 'application/json' });
          response.end(JSON.stringify({ error: 'restarting', code: 'internal_error' }));
          return;
        }
        const { data } = JSON.parse(body) as { data: string };
        received.push(data);
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ received: data.length, accepted: data.length }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('logs repeated upload failures once', async () => {
    const lines: Array<{ msg: string; repeats_skipped?: number }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as { msg: string });
        done();
      },
    });
    const output = new TaskOutput({
      client: new AgentClient(url, 'slw_test-agent-token'),
      taskId: 'ci-00000001.1.0',
      workerId: 'worker-a',
      attempt: 1,
      secrets: [],
      logger: pino({ level: 'warn' }, sink),
    });
    failuresLeft = 4;
    output.write(Buffer.from('line one\n'));
    await output.close();

    expect(received.join('')).toBe('line one\n');
    expect(failuresLeft).toBe(0);
    const failures = lines.filter((line) => line.msg.startsWith('log upload failed'));
    expect(failures).toHaveLength(1);
    expect(failures[0]!.repeats_skipped).toBe(0);
  });

  it('masks API tokens, also across chunks', async () => {
    received.length = 0;
    const output = new TaskOutput({
      client: new AgentClient(url, 'slw_test-agent-token'),
      taskId: 'ci-00000001.1.0',
      workerId: 'worker-a',
      attempt: 1,
      secrets: [],
      logger: pino({ level: 'silent' }),
    });
    const token = `slw_${'A1b2-C3d4_'.repeat(3)}xy`;
    output.write(Buffer.from(`token=${token}\nsplit=${token.slice(0, 9)}`));
    output.write(Buffer.from(`${token.slice(9)} done\n`));
    output.write(Buffer.from(`file ${token}_old.txt, pair ${token}-${token}\n`));
    output.write(Buffer.from('slw_short is no token\n'));
    await output.close();

    const text = received.join('');
    expect(text).not.toContain(token);
    expect(text).toBe(
      'token=***\nsplit=*** done\nfile ***_old.txt, pair ***-***\nslw_short is no token\n',
    );
  });
});
