/**
 * The OpenAPI document lists one trigger path per job type of the pipeline file the server
 * loaded, plus the generic one, and no path for a type that the file does not define.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderApiReference, type OpenApiDocument } from '../../src/api/openapi-markdown.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const PIPELINES = `
pipelines:
  build:
    executor: local
    steps: [{ name: build, run: 'true' }]
  lint:
    executor: local
    needs: [build]
    steps: [{ name: lint, run: 'true' }]
  rollback:
    executor: local
    steps: [{ name: rollback, run: 'true' }]
`;

describe('trigger paths of the pipeline file', () => {
  let server: TestServer;
  let document: OpenApiDocument;

  beforeAll(async () => {
    server = await startTestServer({ SLIPWAY_PIPELINES: writePipelineFile(PIPELINES) });
    const response = await server.request('GET', '/api/openapi.json');
    expect(response.status).toBe(200);
    document = response.body;
  });
  afterAll(async () => {
    await server.close();
  });

  it('lists the defined types only', () => {
    const paths = Object.keys(document.paths ?? {}).filter((path) =>
      path.startsWith('/api/trigger/'),
    );
    // rollback needs an admin token, so only the generic path takes it.
    expect(paths).toEqual(['/api/trigger/build', '/api/trigger/lint', '/api/trigger/{type}']);
  });

  it('renders the same paths in the reference', () => {
    const reference = renderApiReference(document);
    expect(reference).toContain('### POST /api/trigger/build\n');
    expect(reference).toContain('### POST /api/trigger/lint\n');
    expect(reference).toContain('### POST /api/trigger/{type}\n');
    for (const type of ['ci', 'integration-tests', 'deploy', 'rollback']) {
      expect(reference).not.toContain(`### POST /api/trigger/${type}\n`);
    }
  });

  it('lists 404 for the generic path only', () => {
    const responses = (path: string) => Object.keys(document.paths?.[path]?.post?.responses ?? {});
    expect(responses('/api/trigger/build')).toContain('201');
    expect(responses('/api/trigger/build')).not.toContain('404');
    expect(responses('/api/trigger/{type}')).toContain('404');
  });

  it('triggers a defined type on its path', async () => {
    const response = await server.request('POST', '/api/trigger/build', {
      token: server.adminToken,
      body: { commit: 'abc1234' },
    });
    expect(response.status, response.text).toBe(201);
    const metrics = await server.request('GET', '/metrics', { token: server.adminToken });
    expect(metrics.text).toMatch(
      /slipway_http_request_duration_seconds_count\{method="POST",route="\/api\/trigger\/build",status="201"\} 1/,
    );
  });

  it.each(['ci', 'integration-tests', 'deploy'])(
    'rejects undefined type %s before the body',
    async (type) => {
      const response = await server.request('POST', `/api/trigger/${type}`, {
        token: server.adminToken,
        body: { commit: 'not a commit' },
      });
      expect(response.status, response.text).toBe(404);
      expect(response.body.code).toBe('job_type_not_found');
      expect(response.body.error).toContain('defined types: build, lint, rollback');
    },
  );
});
