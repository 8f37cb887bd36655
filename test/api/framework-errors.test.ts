/**
 * Requests that fail before routing (a path that is not valid percent-encoding, a parameter
 * over the length limit, headers over Node's limit) still get the catalogue's error shape.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

describe('errors raised before routing', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('a path that is not valid percent-encoding', async () => {
    const response = await server.request('GET', '/api/job/ci-%ZZ', { token: server.adminToken });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      code: 'validation_failed',
      field: 'path',
      rule: 'encoding',
    });
    expect(response.body.request_id).toBe(response.headers.get('x-request-id'));
  });

  it('a path parameter over the length limit', async () => {
    const response = await server.request('GET', `/api/job/ci-${'a'.repeat(3_000)}`, {
      token: server.adminToken,
    });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      code: 'validation_failed',
      field: 'path',
      rule: 'maxLength',
    });
  });

  it('headers over the size limit', async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>(
      (resolve, reject) => {
        const request = http.request(
          `${server.url}/api/health/status`,
          { headers: { 'x-padding': 'a'.repeat(20_000) } },
          (response) => {
            let text = '';
            response.on('data', (chunk: Buffer) => (text += chunk.toString()));
            response.on('end', () => resolve({ status: response.statusCode!, body: text }));
          },
        );
        request.on('error', reject);
        request.end();
      },
    );
    expect(status).toBe(431);
    expect(JSON.parse(body)).toEqual({
      error: 'the request headers are larger than the server accepts (16 KiB)',
      code: 'headers_too_large',
      field: 'headers',
      rule: 'maxBytes',
    });
  });
});
