import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildOpenApiDocument } from '../../src/api/openapi-document.js';
import { renderApiReference } from '../../src/api/openapi-markdown.js';
import { ERROR_CODES } from '../../src/api/errors.js';

const API_MD = new URL('../../docs/api.md', import.meta.url);

describe('docs/api.md', () => {
  it('matches the OpenAPI document', async () => {
    const generated = renderApiReference(await buildOpenApiDocument());
    const committed = fs.readFileSync(API_MD, 'utf8');
    // On a mismatch, regenerate the file with: npm run docs:api
    expect(committed).toBe(generated);
  });

  it('has a section per endpoint', async () => {
    const document = await buildOpenApiDocument();
    const committed = fs.readFileSync(API_MD, 'utf8');
    const paths = Object.entries(document.paths ?? {});
    expect(paths.length).toBeGreaterThan(10);
    for (const [path, item] of paths) {
      for (const method of Object.keys(item)) {
        expect(committed).toContain(`### ${method.toUpperCase()} ${path}\n`);
      }
    }
  });

  it('parameters with a default are optional', () => {
    const committed = fs.readFileSync(API_MD, 'utf8');
    expect(committed).toContain(
      '| `follow` | query | boolean | no | default false | keep streaming new output',
    );
    const requiredWithDefault = committed
      .split('\n')
      .filter((line) => /^\| `[^`]+` \| \w+ \| [^|]+ \| yes \| [^|]*default /.test(line));
    expect(requiredWithDefault).toEqual([]);
  });

  it('marks nullable fields', () => {
    const committed = fs.readFileSync(API_MD, 'utf8');
    const job = committed.split('### GET /api/job/{job_id}\n')[1]?.split('### ')[0] ?? '';
    expect(job).toContain('| `branch` | string or null | yes |');
    expect(job).toContain('| `finished_at` | string (date-time) or null | yes |');
    expect(job).toContain('| `tasks[].exit_code` | integer or null | yes |');
    expect(job).toContain('| `id` | string | yes |');
  });

  it('lists every error code', () => {
    const committed = fs.readFileSync(API_MD, 'utf8');
    for (const [code, { status }] of Object.entries(ERROR_CODES)) {
      expect(committed).toContain(`| \`${code}\` | ${status} |`);
    }
  });

  it('names the token roles', () => {
    const committed = fs.readFileSync(API_MD, 'utf8');
    const trigger = committed.split('### POST /api/trigger/ci\n')[1]?.split('### ')[0] ?? '';
    expect(trigger).toContain('Token role: trigger or admin.');
    const generic = committed.split('### POST /api/trigger/{type}\n')[1]?.split('### ')[0] ?? '';
    expect(generic).toContain('Job types rollback and recovery need role admin');
    const health = committed.split('### GET /api/health/status\n')[1]?.split('### ')[0] ?? '';
    expect(health).toContain('No token needed.');
  });
});
