/** Storage errors that every request meets are logged once per window, not once per request. */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RepeatedErrors } from '../../src/util/repeated-errors.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface LogLine {
  level: number;
  msg: string;
  held_back?: number;
  err?: { code?: string };
}

/** Returns a stream that parses each log line written to it into `lines`. */
function capture(lines: LogLine[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n'))
        if (line !== '') lines.push(JSON.parse(line));
      done();
    },
  });
}

describe('storage error log', () => {
  let server: TestServer;
  let token: string;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    server = await startTestServer({}, { logger: pino({ level: 'warn' }, capture(lines)) });
    token = await server.token('trigger');
  });
  afterAll(async () => {
    await server.close();
  });

  it('logs the first of many failed writes', async () => {
    const dbPath = path.join(server.dataDir, 'state', 'orchestration.db');
    const moved = `${dbPath}.moved`;
    fs.renameSync(dbPath, moved);
    const statuses: number[] = [];
    try {
      for (let i = 0; i < 20; i += 1) {
        const response = await server.request('POST', '/api/trigger/ci', {
          token,
          body: { commit: 'abc1234' },
        });
        statuses.push(response.status);
      }
    } finally {
      fs.renameSync(moved, dbPath);
    }

    expect(statuses).toEqual(Array(20).fill(503));
    const failed = lines.filter((line) => line.msg.startsWith('request failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]!.level).toBe(50);
    expect(failed[0]!.held_back).toBe(0);
    expect(failed[0]!.err?.code).toBe('SLIPWAY_DATABASE_REPLACED');
    expect(failed[0]!.msg).toContain('repeats within 10 s are counted in held_back');
    const commits = lines.filter((line) => line.msg.startsWith('commit failed'));
    expect(commits).toHaveLength(1);
    expect(commits[0]!.err?.code).toBe('SLIPWAY_DATABASE_REPLACED');
  });

  it('logs the first of many full-disk failures', async () => {
    const sqlite = server.context.store.sqlite;
    sqlite.pragma(`max_page_count = ${Number(sqlite.pragma('page_count', { simple: true }))}`);
    const statuses: number[] = [];
    try {
      for (let i = 0; i < 20; i += 1) {
        const response = await server.request('POST', '/api/trigger/ci', {
          token,
          body: { commit: 'abc1234', params: { NOTE: 'x'.repeat(8000) } },
        });
        statuses.push(response.status);
      }
    } finally {
      sqlite.pragma('max_page_count = 4294967294');
    }

    const full = statuses.filter((status) => status === 503).length;
    expect(full).toBeGreaterThan(10);
    // Each failed write is reported by its request, and only the first within 10 s is logged.
    const requests = lines.filter(
      (line) => line.msg.startsWith('request failed') && line.err?.code === 'SQLITE_FULL',
    );
    expect(requests).toHaveLength(1);
    expect(requests[0]!.held_back).toBe(0);
  });
});

describe('token use log', () => {
  let server: TestServer;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    server = await startTestServer({}, { logger: pino({ level: 'warn' }, capture(lines)) });
  });
  afterAll(async () => {
    await server.close();
  });

  it('logs the first of many failed token uses', async () => {
    const token = await server.token('read');
    const tokens: string[] = [];
    for (let i = 0; i < 20; i += 1) tokens.push(await server.token('read', `reader-${i}`));
    const dbPath = path.join(server.dataDir, 'state', 'orchestration.db');
    const moved = `${dbPath}.moved`;
    // The read connection opens on first use, which fails while the file is moved.
    await server.request('GET', '/api/job/ci-00000000', { token });
    const before = lines.length;
    fs.renameSync(dbPath, moved);
    const statuses: number[] = [];
    try {
      // Each token is looked up once, and each lookup stores its use, which fails.
      for (const reader of tokens) {
        const response = await server.request('GET', '/api/job/ci-00000000', { token: reader });
        statuses.push(response.status);
      }
      // The uses are stored without waiting, so this write settles after them.
      await server.context.store.write(async () => undefined).catch(() => undefined);
    } finally {
      fs.renameSync(moved, dbPath);
    }

    expect(statuses).toEqual(Array(20).fill(404));
    const failed = lines
      .slice(before)
      .filter((line) => line.msg.startsWith('could not store a token use'));
    expect(failed).toHaveLength(1);
    expect(failed[0]!.held_back).toBe(0);
  });
});

describe('repeated errors', () => {
  it('counts repeats within the window', () => {
    let now = 1_000;
    const repeated = new RepeatedErrors(10_000, () => now);

    expect(repeated.record('full')).toBe(0);
    now += 4_000;
    expect(repeated.record('full')).toBeUndefined();
    expect(repeated.record('full')).toBeUndefined();
    // Another kind has its own window.
    expect(repeated.record('io')).toBe(0);
    now += 6_000;
    expect(repeated.record('full')).toBe(2);
    expect(repeated.record('full')).toBeUndefined();
    now += 10_000;
    expect(repeated.record('full')).toBe(1);
    expect(repeated.record('io')).toBe(0);
  });
});
