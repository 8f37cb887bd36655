/**
 * Matrix values from a trigger name their task (`versioned (1.2)`) in log lines and reasons and
 * reach the steps as environment variables. So a value with a control character or a line
 * separator is rejected, also where no image reference would catch it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const PIPELINES = `
pipelines:
  versioned:
    executor: local
    matrix:
      version: { from: versions, default: ['1'] }
    steps: [{ name: test, run: 'true' }]
`;

describe('matrix values from a trigger', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({ SLIPWAY_PIPELINES: writePipelineFile(PIPELINES) });
    token = await server.token('trigger');
  });
  afterAll(async () => {
    await server.close();
  });

  const trigger = (body: Record<string, unknown>) =>
    server.request('POST', '/api/trigger/versioned', {
      token,
      body: { commit: 'abc1234', ...body },
    });

  it.each([
    ['line break', '1\n[slipway] task ended success after 1.0 s', 'U+000A'],
    ['NUL', 'a\u0000b', 'U+0000'],
    ['escape sequence', '\u001b[2Jred', 'U+001B'],
    ['C1 control', 'a\u0085b', 'U+0085'],
    ['line separator', 'a\u2028b', 'U+2028'],
    ['paragraph separator', 'a\u2029b', 'U+2029'],
  ])('value with %s is rejected', async (_label, value, code) => {
    const before = await countRows(server.context.store.db);
    const response = await trigger({ versions: ['1', value] });
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('validation_failed');
    expect(response.body.field).toBe('versions.1');
    expect(response.body.rule).toBe('printable');
    expect(response.body.error).toContain(
      `versions.1 contains ${code}, a control character or line separator;`,
    );
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('value from params names params', async () => {
    const before = await countRows(server.context.store.db);
    const response = await trigger({ params: { versions: 'a\nb' } });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('params.versions');
    expect(response.body.rule).toBe('printable');
    expect(response.body.error).toMatch(
      /^params\.versions contains U\+000A, a control character or line separator;/,
    );
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('list in params names its path', async () => {
    const before = await countRows(server.context.store.db);
    const response = await trigger({ params: { versions: ['1', 'a\u0085b'] } });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('params.versions.1');
    expect(response.body.rule).toBe('printable');
    expect(response.body.error).toMatch(/^params\.versions\.1 contains U\+0085,/);
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('empty list in params names its path', async () => {
    const response = await trigger({ params: { versions: [] } });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('params.versions');
    expect(response.body.error).toBe('params.versions must not be an empty list');
  });

  it.each([
    ['object', { versions: { major: '1' } }, 'params.versions', 'an object'],
    ['nested list', { versions: ['1', ['2', '3']] }, 'params.versions.1', 'a list'],
    ['null in a list', { versions: ['1', null] }, 'params.versions.1', 'null'],
  ])('%s from params is rejected', async (_label, params, field, kind) => {
    const before = await countRows(server.context.store.db);
    const response = await trigger({ params });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe(field);
    expect(response.body.rule).toBe('type');
    expect(response.body.error).toBe(
      `${field} is ${kind}; a matrix value must be a string, a whole number or a boolean`,
    );
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('boolean from params is kept', async () => {
    const response = await trigger({ params: { versions: [true, 2] } });
    expect(response.status).toBe(201);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
      token: server.adminToken,
    });
    const names = (job.body.tasks as Array<{ name: string }>).map((task) => task.name);
    expect(names).toEqual(['versioned (true)', 'versioned (2)']);
  });

  it('tab and bidirectional characters are kept', async () => {
    const response = await trigger({ versions: ['a\tb', 'c\u202ed'] });
    expect(response.status).toBe(201);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
      token: server.adminToken,
    });
    const names = (job.body.tasks as Array<{ name: string }>).map((task) => task.name);
    expect(names).toEqual(['versioned (a\tb)', 'versioned (c\u202ed)']);
  });
});
