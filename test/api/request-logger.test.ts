import { Writable } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DeferredChildLogger } from '../../src/api/request-logger.js';

function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  const parent = pino({ level }, stream) as unknown as FastifyBaseLogger;
  let children = 0;
  // pino's children inherit `child` from their parent, so the count must not bind `this`.
  const child = parent.child;
  parent.child = function (this: FastifyBaseLogger, ...args: Parameters<typeof child>) {
    children += 1;
    return child.apply(this, args);
  } as typeof parent.child;
  return { parent, lines, children: () => children };
}

describe('the per-request logger', () => {
  it('skips the child below the level', () => {
    const { parent, lines, children } = capture('warn');
    const logger = new DeferredChildLogger(parent, { reqId: 'r-1' }, {});
    logger.info('incoming request');
    logger.debug({ detail: 1 }, 'not written');
    expect(children()).toBe(0);
    expect(lines).toEqual([]);

    logger.warn({ code: 'slow' }, 'took %d ms', 12);
    logger.info('written now that the child exists, but still filtered by its level');
    expect(children()).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reqId: 'r-1', code: 'slow', msg: 'took 12 ms', level: 40 });
  });

  it('binds the request id at info', () => {
    const { parent, lines } = capture('info');
    const logger = new DeferredChildLogger(parent, { reqId: 'r-2' }, {});
    logger.info({ res: { statusCode: 200 } }, 'request completed');
    logger.error(new Error('boom'));
    expect(lines.map((line) => [line.reqId, line.level])).toEqual([
      ['r-2', 30],
      ['r-2', 50],
    ]);
    expect(lines[1]).toMatchObject({ err: { message: 'boom' } });
  });

  it('follows its own level and children', () => {
    const { parent, lines } = capture('warn');
    const logger = new DeferredChildLogger(parent, { reqId: 'r-3' }, {});
    expect(logger.level).toBe('warn');
    logger.level = 'debug';
    expect(logger.level).toBe('debug');
    logger.debug('now written');
    logger.child({ step: 'checkout' }).warn('from a grandchild');
    expect(lines.map((line) => [line.msg, line.reqId, line.step])).toEqual([
      ['now written', 'r-3', undefined],
      ['from a grandchild', 'r-3', 'checkout'],
    ]);
    expect(parent.level).toBe('warn');
  });
});
