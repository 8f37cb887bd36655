/**
 * TaskOutput against an API that is away for a while: uploads are retried until one succeeds,
 * and the failures are logged once rather than once per retry.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentClient } from '../../src/worker/client.js';
import { mask, TaskOutput } from '../../src/worker/task-output.js';

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

  it('masks a secret containing another across writes', async () => {
    received.length = 0;
    const output = outputTo(url, ['admin', 'postgres://admin:hunter2-pw@db:5432/app']);
    output.write(Buffer.from('two writes: postgres://admin'));
    output.write(Buffer.from(':hunter2-pw@db:5432/app\n'));
    await output.close();

    const text = received.join('');
    expect(text).not.toContain('hunter2');
    expect(text).toBe('two writes: ***\n');
  });

  it('masks overlapping secrets across writes', async () => {
    received.length = 0;
    const output = outputTo(url, ['abcXYZ1', 'XYZ1-tail-9']);
    output.write(Buffer.from('value abcXYZ1'));
    output.write(Buffer.from('-tail-9 end\n'));
    await output.close();

    const text = received.join('');
    expect(text).not.toContain('tail-9');
    expect(text).toBe('value *** end\n');
  });

  it('masks multibyte secrets split inside a character', async () => {
    received.length = 0;
    const output = outputTo(url, ['\u20acuro', 'pay \u20acuro\u{1F600} now']);
    const bytes = Buffer.from('pay \u20acuro\u{1F600} now\n');
    const cut = bytes.indexOf(Buffer.from('\u{1F600}')) + 2;
    output.write(bytes.subarray(0, cut));
    output.write(bytes.subarray(cut));
    await output.close();

    expect(received.join('')).toBe('***\n');
  });

  it('masks a token containing a secret across writes', async () => {
    received.length = 0;
    const output = outputTo(url, ['abc']);
    const token = `slw_abc${'d'.repeat(29)}`;
    output.write(Buffer.from(`token ${token.slice(0, 8)}`));
    output.write(Buffer.from(`${token.slice(8)} end\n`));
    await output.close();

    const text = received.join('');
    expect(text).not.toContain('ddd');
    expect(text).toBe('token *** end\n');
  });

  it('uploads output that cannot begin a secret without waiting', async () => {
    received.length = 0;
    const output = outputTo(url, ['postgres://admin:hunter2-pw@db:5432/app']);
    output.write(Buffer.from('step one done\n'));
    await vi.waitFor(() => expect(received.join('')).toBe('step one done\n'), { timeout: 2_000 });

    output.write(Buffer.from('url postgres://admin'));
    await vi.waitFor(() => expect(received.join('')).toBe('step one done\nurl '), {
      timeout: 2_000,
    });
    output.write(Buffer.from(':hunter2-pw@db:5432/app\n'));
    await output.close();
    expect(received.join('')).toBe('step one done\nurl ***\n');
  });
});

describe('task output masking', () => {
  /** Secret sets whose members overlap, contain, begin or end one another. */
  const secretSets: string[][] = [
    ['admin', 'postgres://admin:hunter2-pw@db:5432/app'],
    ['abcXYZ1', 'XYZ1-tail-9'],
    ['aa'],
    ['aba', 'bab', 'ab'],
    ['abc', 'abcabd', 'cab'],
    ['x.+?(', '(|$^y', 'x.+?(|$^y\\'],
    ['\u00e9\u20ac\u{1F600}a', '\u{1F600}ab', '\u20ac'],
    ['key', 'slw_key'],
  ];

  it('matches one-write masking for any split', async () => {
    const random = seededRandom(7);
    for (const secrets of secretSets) {
      const fragments = [
        ...secrets.flatMap((secret) => [secret, ...secretPieces(secret, random)]),
        ' ',
        '-\n',
        'slw_',
        'Q'.repeat(16),
      ];
      for (let sample = 0; sample < 40; sample += 1) {
        const text = randomText(fragments, random);
        const expected = mask(text, secrets);
        for (const secret of secrets) expect(expected).not.toContain(secret);
        const bytes = Buffer.from(text);
        for (let first = 0; first <= bytes.length; first += 1) {
          const second = first + Math.floor(random() * (bytes.length - first + 1));
          const pieces = [bytes.subarray(0, first), bytes.subarray(first, second)];
          pieces.push(bytes.subarray(second));
          const stored = await storeOutput(secrets, pieces);
          expect(stored, JSON.stringify({ secrets, text, first, second })).toBe(expected);
        }
      }
    }
  });
});

describe('task output buffer', () => {
  it('drops output past the buffer while uploads stall', async () => {
    const client = new StallingClient();
    const output = new TaskOutput({
      client,
      taskId: 'ci-00000001.1.0',
      workerId: 'worker-a',
      attempt: 1,
      secrets: [],
      logger: pino({ level: 'silent' }),
      maxPendingChars: 300_000,
    });
    const line = `${'x'.repeat(99)}\n`;
    for (let i = 0; i < 10_000; i += 1) output.write(Buffer.from(line));
    client.resume();
    // Output is kept again once the buffer has drained below half of its maximum.
    await vi.waitFor(() => expect(client.uploads.join('').length).toBeGreaterThan(300_000), {
      timeout: 2_000,
    });
    output.write(Buffer.from('after the stall\n'));
    await output.close();

    const text = client.uploads.join('');
    expect(text.length).toBeLessThan(400_000);
    expect(text).toMatch(/\[slipway\] dropped \d+ characters of output here because log uploads/);
    expect(text.endsWith('after the stall\n')).toBe(true);
  });

  it('stops uploading once the API cuts the log', async () => {
    const client = new MemoryClient({ truncated: true });
    const output = new TaskOutput({
      client,
      taskId: 'ci-00000001.1.0',
      workerId: 'worker-a',
      attempt: 1,
      secrets: [],
      logger: pino({ level: 'silent' }),
    });
    output.write(Buffer.from('first\n'));
    await vi.waitFor(() => expect(client.uploads).toHaveLength(1), { timeout: 2_000 });
    output.write(Buffer.from('second\n'));
    await output.close();

    expect(client.uploads).toEqual(['first\n']);
  });
});

describe('task output abandon', () => {
  it('drops failing uploads once abandoned', async () => {
    const client = new FailingClient();
    const output = new TaskOutput({
      client,
      taskId: 'ci-00000001.1.0',
      workerId: 'worker-a',
      attempt: 1,
      secrets: [],
      logger: pino({ level: 'silent' }),
    });
    output.write(Buffer.from('never stored\n'));
    output.abandon();

    await output.close();
    expect(client.calls).toBe(1);
  }, 5_000);
});

/** Fails every upload as a server error, which the worker retries. */
class FailingClient extends AgentClient {
  calls = 0;

  constructor() {
    super('http://127.0.0.1:9', 'slw_test-agent-token');
  }

  override uploadLog(): Promise<unknown> {
    this.calls += 1;
    return Promise.reject(new Error('503 from a test client'));
  }
}

/** Holds every upload until resume(), like an API whose disk is full. */
class StallingClient extends AgentClient {
  readonly uploads: string[] = [];
  #resume: () => void = () => undefined;
  readonly #resumed = new Promise<void>((resolve) => (this.#resume = resolve));

  constructor() {
    super('http://127.0.0.1:9', 'slw_test-agent-token');
  }

  resume(): void {
    this.#resume();
  }

  override async uploadLog(_taskId: string, body: { data: string }): Promise<unknown> {
    await this.#resumed;
    this.uploads.push(body.data);
    return {};
  }
}

/** An AgentClient that stores uploads in memory, for tests that run thousands of tasks. */
class MemoryClient extends AgentClient {
  readonly uploads: string[] = [];
  readonly #answer: object;

  constructor(answer: object = {}) {
    super('http://127.0.0.1:9', 'slw_test-agent-token');
    this.#answer = answer;
  }

  override uploadLog(_taskId: string, body: { data: string }): Promise<unknown> {
    this.uploads.push(body.data);
    return Promise.resolve(this.#answer);
  }
}

function outputTo(url: string, secrets: string[]): TaskOutput {
  return new TaskOutput({
    client: new AgentClient(url, 'slw_test-agent-token'),
    taskId: 'ci-00000001.1.0',
    workerId: 'worker-a',
    attempt: 1,
    secrets,
    logger: pino({ level: 'silent' }),
  });
}

async function storeOutput(secrets: string[], writes: Buffer[]): Promise<string> {
  const client = new MemoryClient();
  const output = new TaskOutput({
    client,
    taskId: 'ci-00000001.1.0',
    workerId: 'worker-a',
    attempt: 1,
    secrets,
    logger: pino({ level: 'silent' }),
  });
  for (const write of writes) output.write(write);
  await output.close();
  return client.uploads.join('');
}

/** Cuts `secret` at a random character and returns the prefix and the suffix. */
function secretPieces(secret: string, random: () => number): string[] {
  const characters = [...secret];
  const cut = 1 + Math.floor(random() * (characters.length - 1));
  return [characters.slice(0, cut).join(''), characters.slice(cut).join('')];
}

function randomText(fragments: string[], random: () => number): string {
  let text = '';
  const count = 1 + Math.floor(random() * 6);
  for (let i = 0; i < count; i += 1) text += fragments[Math.floor(random() * fragments.length)];
  return text;
}

/** Mulberry32, so a failing case can be reproduced. */
function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
