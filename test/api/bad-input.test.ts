import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writePipelineFile } from '../support/execution.js';
import { countRows, lastUpdate } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface BadCase {
  name: string;
  method?: string;
  /** Path, with `{job}` standing for an existing queued job. */
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  status: number;
  code: string;
  field: string;
  rule: string;
}

const TRIGGER = '/api/trigger/ci';
const FIVE_MB = 5 * 1024 * 1024;

const BODY_CASES: BadCase[] = [
  {
    name: 'malformed JSON',
    path: TRIGGER,
    body: '{"commit":',
    status: 400,
    code: 'invalid_json',
    field: 'body',
    rule: 'json',
  },
  {
    name: 'empty JSON body',
    path: TRIGGER,
    body: '',
    headers: { 'content-type': 'application/json' },
    status: 400,
    code: 'invalid_json',
    field: 'body',
    rule: 'json',
  },
  {
    name: 'no body',
    path: TRIGGER,
    status: 400,
    code: 'validation_failed',
    field: 'body',
    rule: 'type',
  },
  {
    name: 'array body',
    path: TRIGGER,
    body: '[]',
    status: 400,
    code: 'validation_failed',
    field: 'body',
    rule: 'type',
  },
  {
    name: 'gzip-encoded body',
    path: TRIGGER,
    body: '\u001f\u008b\u0008 not really gzip',
    headers: { 'content-encoding': 'gzip' },
    status: 415,
    code: 'unsupported_media_type',
    field: 'Content-Encoding',
    rule: 'identity',
  },
  {
    name: 'XML body',
    path: TRIGGER,
    body: '<commit>abc1234</commit>',
    headers: { 'content-type': 'application/xml' },
    status: 415,
    code: 'unsupported_media_type',
    field: 'Content-Type',
    rule: 'application/json',
  },
  {
    name: 'text body',
    path: TRIGGER,
    body: 'commit=abc1234',
    headers: { 'content-type': 'text/plain' },
    status: 415,
    code: 'unsupported_media_type',
    field: 'Content-Type',
    rule: 'application/json',
  },
  {
    name: 'JSON in another charset',
    path: TRIGGER,
    body: { commit: 'abc1234' },
    headers: { 'content-type': 'application/json; charset=latin1' },
    status: 415,
    code: 'unsupported_media_type',
    field: 'Content-Type',
    rule: 'charset',
  },
  {
    name: 'missing commit',
    path: TRIGGER,
    body: { branch: 'main' },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'required',
  },
  {
    name: 'commit as a number',
    path: TRIGGER,
    body: { commit: 1234567 },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'type',
  },
  {
    name: 'matrix input over 200 characters',
    path: TRIGGER,
    body: { commit: 'abcdef5', flavours: 'x'.repeat(201) },
    status: 400,
    code: 'validation_failed',
    field: 'flavours',
    rule: 'maxLength',
  },
  {
    name: 'non-hex commit',
    path: TRIGGER,
    body: { commit: 'xyz1234' },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'pattern',
  },
  {
    name: 'commit too short',
    path: TRIGGER,
    body: { commit: 'abc12' },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'pattern',
  },
  {
    name: 'commit too long',
    path: TRIGGER,
    body: { commit: 'a'.repeat(65) },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'pattern',
  },
  {
    name: 'commit with a shell command',
    path: TRIGGER,
    body: { commit: 'abc1234; rm -rf /' },
    status: 400,
    code: 'validation_failed',
    field: 'commit',
    rule: 'pattern',
  },
  {
    name: 'branch as a boolean',
    path: TRIGGER,
    body: { commit: 'abc1234', branch: true },
    status: 400,
    code: 'validation_failed',
    field: 'branch',
    rule: 'type',
  },
  {
    name: 'empty branch',
    path: TRIGGER,
    body: { commit: 'abc1234', branch: '' },
    status: 400,
    code: 'validation_failed',
    field: 'branch',
    rule: 'minLength',
  },
  {
    name: 'branch over 255 characters',
    path: TRIGGER,
    body: { commit: 'abc1234', branch: 'b'.repeat(256) },
    status: 400,
    code: 'validation_failed',
    field: 'branch',
    rule: 'maxLength',
  },
  {
    name: 'python_versions as a string',
    path: TRIGGER,
    body: { commit: 'abc1234', python_versions: '3.12' },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions',
    rule: 'type',
  },
  {
    name: 'empty python_versions',
    path: TRIGGER,
    body: { commit: 'abc1234', python_versions: [] },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions',
    rule: 'matrix',
  },
  {
    // JSON.parse reads 3.10 as 3.1, so the task would run Python 3.1.
    name: 'python_versions with a fractional number',
    path: TRIGGER,
    body: { commit: 'abc1234', python_versions: ['3.12', 3.1] },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions.1',
    rule: 'matrix',
  },
  {
    name: 'python_versions value that breaks the image',
    path: TRIGGER,
    body: { commit: 'abc1234', python_versions: ['3.12', '../../x'] },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions.1',
    rule: 'image_reference',
  },
  {
    name: 'python_versions for a type without the axis',
    path: '/api/trigger/deploy',
    body: { commit: 'abc1234', python_versions: ['3.12'] },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions',
    rule: 'matrix_axis',
  },
  {
    name: 'python_versions on the generic trigger route',
    path: '/api/trigger/recovery',
    body: { commit: 'abc1234', python_versions: ['3.12'] },
    status: 400,
    code: 'validation_failed',
    field: 'python_versions',
    rule: 'matrix_axis',
  },
  {
    name: 'params as a string',
    path: TRIGGER,
    body: { commit: 'abc1234', params: 'fast' },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'type',
  },
  {
    name: 'param name with a line break',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { 'fast\nmode': '1' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'printable',
  },
  {
    name: 'param name with NUL',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { 'fast\u0000mode': '1' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'printable',
  },
  {
    name: 'param name with an escape sequence',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { '\u001b[2Jfast': '1' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'printable',
  },
  {
    name: 'param name with a C1 control',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { 'fast\u0085mode': '1' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'printable',
  },
  {
    name: 'param name with a line separator',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { 'fast\u2028mode': '1' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'printable',
  },
  {
    name: 'github_run_attempt without github_run_id',
    path: TRIGGER,
    body: { commit: 'abc1234', github_run_attempt: 2 },
    status: 400,
    code: 'validation_failed',
    field: 'github_run_attempt',
    rule: 'dependentRequired',
  },
  {
    name: 'github_run_id not a number',
    path: TRIGGER,
    body: { commit: 'abc1234', github_run_id: '12ab' },
    status: 400,
    code: 'validation_failed',
    field: 'github_run_id',
    rule: 'pattern',
  },
  {
    name: 'params nested 200000 levels deep',
    path: TRIGGER,
    body: `{"commit":"abc1234","params":{"x":${'['.repeat(200_000)}${']'.repeat(200_000)}}}`,
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'maxDepth',
  },
  {
    name: 'a param too long for an environment variable',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { big: 'a'.repeat(70_000) } },
    status: 400,
    code: 'validation_failed',
    field: 'params.big',
    rule: 'maxBytes',
  },
  {
    name: 'params too long together for a process environment',
    path: TRIGGER,
    body: {
      commit: 'abc1234',
      params: Object.fromEntries(
        Array.from({ length: 9 }, (_, i) => [`p${i}`, 'a'.repeat(60_000)]),
      ),
    },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'maxBytes',
  },
  {
    name: 'recovery params nested 200000 levels deep',
    path: '/api/recovery/execute',
    body: `{"procedure":"full-recovery","params":{"x":${'['.repeat(200_000)}${']'.repeat(200_000)}}}`,
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'maxDepth',
  },
  {
    name: 'a recovery param too long for an environment variable',
    path: '/api/recovery/execute',
    body: { procedure: 'full-recovery', params: { big: 'a'.repeat(70_000) } },
    status: 400,
    code: 'validation_failed',
    field: 'params.big',
    rule: 'maxBytes',
  },
  {
    name: 'recovery branch that is no git ref',
    path: '/api/recovery/execute',
    body: { procedure: 'full-recovery', branch: 'a..b' },
    status: 400,
    code: 'validation_failed',
    field: 'branch',
    rule: 'git-ref',
  },
  {
    name: 'param integer beyond 2^53',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"n":9007199254740993}}',
    status: 400,
    code: 'validation_failed',
    field: 'params.n',
    rule: 'maximum',
  },
  {
    name: 'param number beyond a double',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"deep":{"list":[1,-1e400]}}}',
    status: 400,
    code: 'validation_failed',
    field: 'params.deep.list.1',
    rule: 'maximum',
  },
  {
    name: 'params that become one environment variable',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { 'a-b': 1, 'A.B': 2 } },
    status: 400,
    code: 'validation_failed',
    field: 'params.A.B',
    rule: 'uniqueVariable',
  },
  {
    name: 'param with an empty name',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { '': 'x' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'propertyNames',
  },
  {
    name: 'param with a 101-character name',
    path: TRIGGER,
    body: { commit: 'abc1234', params: { ['n'.repeat(101)]: 'x' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'propertyNames',
  },
  {
    name: 'recovery param with an empty name',
    path: '/api/recovery/execute',
    body: { procedure: 'full-recovery', params: { '': 'x' } },
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'propertyNames',
  },
  {
    name: 'param with a NUL character',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"x":"a\\u0000b"}}',
    status: 400,
    code: 'validation_failed',
    field: 'params.x',
    rule: 'environment',
  },
  {
    name: 'param with a lone surrogate',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"x":"a\\ud800b"}}',
    status: 400,
    code: 'validation_failed',
    field: 'params.x',
    rule: 'unicode',
  },
  {
    name: '__proto__ key in params',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"__proto__":{"polluted":true}}}',
    status: 400,
    code: 'invalid_json',
    field: 'body',
    rule: 'json',
  },
  {
    name: 'repeated key',
    path: TRIGGER,
    body: '{"commit":"1234567","commit":"7654321"}',
    status: 400,
    code: 'invalid_json',
    field: 'body',
    rule: 'uniqueKeys',
  },
  {
    name: 'branch with a lone surrogate',
    path: TRIGGER,
    body: '{"commit":"abc1234","branch":"fix/a\\ud800b"}',
    status: 400,
    code: 'validation_failed',
    field: 'branch',
    rule: 'unicode',
  },
  {
    name: 'unknown field',
    path: TRIGGER,
    body: { commit: 'abc1234', colour: ['red'] },
    status: 400,
    code: 'validation_failed',
    field: 'colour',
    rule: 'unknown_field',
  },
  {
    name: 'Idempotency-Key with a space',
    path: TRIGGER,
    body: { commit: 'abc1234' },
    headers: { 'idempotency-key': 'two words' },
    status: 400,
    code: 'validation_failed',
    field: 'idempotency-key',
    rule: 'pattern',
  },
  {
    name: '5 MB body',
    path: TRIGGER,
    body: JSON.stringify({ commit: 'abc1234', params: { blob: 'x'.repeat(FIVE_MB) } }),
    status: 413,
    code: 'body_too_large',
    field: 'body',
    rule: 'maxBytes',
  },
  {
    name: 'job type not in the pipeline file',
    path: '/api/trigger/no-such-type',
    body: { commit: 'abc1234' },
    status: 404,
    code: 'job_type_not_found',
    field: 'type',
    rule: 'defined',
  },
  {
    // Object.prototype has a "constructor" key, so a plain-object lookup found a function.
    name: 'job type named like an Object.prototype key',
    path: '/api/trigger/constructor',
    body: { commit: 'abc1234' },
    status: 404,
    code: 'job_type_not_found',
    field: 'type',
    rule: 'defined',
  },
  {
    name: 'recovery procedure named like an Object.prototype key',
    path: '/api/recovery/execute',
    body: { procedure: 'constructor' },
    status: 404,
    code: 'procedure_not_found',
    field: 'procedure',
    rule: 'defined',
  },
  {
    name: 'job type with capitals',
    path: '/api/trigger/Deploy',
    body: { commit: 'abc1234' },
    status: 400,
    code: 'validation_failed',
    field: 'type',
    rule: 'pattern',
  },
  {
    name: 'PATCH unknown status',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'done' },
    status: 400,
    code: 'validation_failed',
    field: 'status',
    rule: 'enum',
  },
  {
    name: 'PATCH without status',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { reason: 'x' },
    status: 400,
    code: 'validation_failed',
    field: 'status',
    rule: 'required',
  },
  {
    name: 'PATCH exit_code as text',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'running', exit_code: 'zero' },
    status: 400,
    code: 'validation_failed',
    field: 'exit_code',
    rule: 'type',
  },
  {
    name: 'PATCH exit_code out of range',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'running', exit_code: 1000 },
    status: 400,
    code: 'validation_failed',
    field: 'exit_code',
    rule: 'maximum',
  },
  {
    name: 'PATCH unknown field',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'running', worker: 'w1' },
    status: 400,
    code: 'validation_failed',
    field: 'worker',
    rule: 'unknown_field',
  },
  {
    name: 'PATCH success with a nonzero exit_code',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'success', exit_code: 3 },
    status: 400,
    code: 'validation_failed',
    field: 'exit_code',
    rule: 'matches_status',
  },
  {
    name: 'PATCH failure with exit_code 0',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: { status: 'failure', exit_code: 0 },
    status: 400,
    code: 'validation_failed',
    field: 'exit_code',
    rule: 'matches_status',
  },
  {
    name: 'cancel with an empty reason',
    path: '/api/job/{job}/cancel',
    body: { reason: '' },
    status: 400,
    code: 'validation_failed',
    field: 'reason',
    rule: 'minLength',
  },
  {
    name: 'cancel with an unknown field',
    path: '/api/job/{job}/cancel',
    body: { force: true },
    status: 400,
    code: 'validation_failed',
    field: 'force',
    rule: 'unknown_field',
  },
  {
    // A lone surrogate has no UTF-8 form, so the database would store other text than sent.
    name: 'cancel reason with a lone surrogate',
    path: '/api/job/{job}/cancel',
    body: '{"reason":"a\\udc00b"}',
    status: 400,
    code: 'validation_failed',
    field: 'reason',
    rule: 'unicode',
  },
  {
    name: 'PATCH reason with a lone surrogate',
    method: 'PATCH',
    path: '/api/job/{job}/status',
    body: '{"status":"cancelled","reason":"\\ud83d"}',
    status: 400,
    code: 'validation_failed',
    field: 'reason',
    rule: 'unicode',
  },
  {
    name: 'worker label with a lone surrogate',
    path: '/api/agent/workers',
    body:
      '{"name":"w1","hostname":"h","executors":["local"],"capacity":1,' +
      '"labels":["gpu","x\\ud800"]}',
    status: 400,
    code: 'validation_failed',
    field: 'labels.1',
    rule: 'unicode',
  },
  {
    name: 'param name with a lone surrogate',
    path: TRIGGER,
    body: '{"commit":"abc1234","params":{"a\\ud800":"x"}}',
    status: 400,
    code: 'validation_failed',
    field: 'params',
    rule: 'unicode',
  },
  {
    name: 'retry with an unknown field',
    path: '/api/job/{job}/retry',
    body: { x: 1 },
    status: 400,
    code: 'validation_failed',
    field: 'x',
    rule: 'unknown_field',
  },
];

/**
 * JSON bodies that are not objects, on every route whose body is optional. They must be
 * rejected, not read as a missing body.
 */
const NON_OBJECT_BODY_CASES: BadCase[] = [
  TRIGGER,
  '/api/job/{job}/cancel',
  '/api/job/{job}/retry',
  '/api/rollback/execute',
  '/api/sync-variables',
].flatMap((path) =>
  ['null', '[]', '"x"', '3'].map((body) => ({
    name: `${body} on ${path}`,
    path,
    body,
    status: 400,
    code: 'validation_failed',
    field: 'body',
    rule: 'type',
  })),
);

const QUERY_CASES: BadCase[] = [
  ['limit=0', 'limit', 'minimum'],
  ['limit=501', 'limit', 'maximum'],
  ['limit=ten', 'limit', 'type'],
  ['limit=1e3', 'limit', 'type'],
  ['limit=1.5', 'limit', 'type'],
  ['status=done', 'status', 'enum'],
  ['type=Deploy', 'type', 'pattern'],
  ['commit=xyz', 'commit', 'pattern'],
  ['branch=', 'branch', 'minLength'],
  ['cursor=not-a-cursor', 'cursor', 'format'],
  ['sort=id', 'sort', 'unknown_field'],
  ['branch=%ZZ', 'branch', 'encoding'],
  ['branch=%C3%28', 'branch', 'encoding'],
  ['br%ZZanch=main', 'br%ZZanch', 'encoding'],
  ['=x', 'query', 'unknown_field'],
  ['limit=5&=', 'query', 'unknown_field'],
]
  .map(([query, field, rule]): BadCase => ({
    name: `admin jobs ${query}`,
    method: 'GET',
    path: `/api/admin/jobs?${query}`,
    status: 400,
    code: 'validation_failed',
    field: field!,
    rule: rule!,
  }))
  .concat(
    [
      ['since=yesterday', 'since', 'format'],
      ['since=2016-12-31T23:59:60Z', 'since', 'format'],
      ['limit=1001', 'limit', 'maximum'],
      ['cursor=abc', 'cursor', 'pattern'],
      ['action=DROP%20TABLE', 'action', 'pattern'],
    ].map(([query, field, rule]) => ({
      name: `audit log ${query}`,
      method: 'GET',
      path: `/api/admin/audit-log?${query}`,
      status: 400,
      code: 'validation_failed',
      field: field!,
      rule: rule!,
    })),
    [
      {
        name: 'health history with a leap second',
        method: 'GET',
        path: '/api/health/history?until=2016-12-31T23:59:60Z',
        status: 400,
        code: 'validation_failed',
        field: 'until',
        rule: 'format',
      },
      {
        name: 'admin jobs limit=1&limit=2',
        method: 'GET',
        path: '/api/admin/jobs?limit=1&limit=2',
        status: 400,
        code: 'validation_failed',
        field: 'limit',
        rule: 'single',
      },
      {
        name: 'trigger with a query parameter',
        path: `${TRIGGER}?commit=abc1234`,
        body: { commit: 'abc1234' },
        status: 400,
        code: 'validation_failed',
        field: 'commit',
        rule: 'unknown_field',
      },
      {
        name: 'generic trigger with a query parameter',
        path: '/api/trigger/recovery?dry_run=1',
        body: { commit: 'abc1234' },
        status: 400,
        code: 'validation_failed',
        field: 'dry_run',
        rule: 'unknown_field',
      },
      {
        name: 'job with a query parameter',
        method: 'GET',
        path: '/api/job/{job}?foo=bar',
        status: 400,
        code: 'validation_failed',
        field: 'foo',
        rule: 'unknown_field',
      },
      {
        name: 'state with a repeated unknown query parameter',
        method: 'GET',
        path: '/api/state?foo=1&foo=2',
        status: 400,
        code: 'validation_failed',
        field: 'foo',
        rule: 'unknown_field',
      },
      {
        name: 'logs follow=maybe',
        method: 'GET',
        path: '/api/job/{job}/logs?follow=maybe',
        status: 400,
        code: 'validation_failed',
        field: 'follow',
        rule: 'type',
      },
      {
        name: 'logs of an unknown task',
        method: 'GET',
        path: '/api/job/{job}/logs?task=nope',
        status: 404,
        code: 'task_not_found',
        field: 'task',
        rule: 'exists',
      },
    ],
  );

/** Job ids that must never reach a query or a file path. */
const HOSTILE_IDS = [
  '..%2F..%2Fetc%2Fpasswd',
  '..%2Fadmin',
  "ci-'%20OR%20'1'%3D'1",
  "ci-1234567'%3B%20DROP%20TABLE%20jobs%3B--",
  'ci-1234567%22',
  'ci-ABCDEF12',
  'ci-1234567',
  '%00',
];
const JOB_ROUTES: Array<[string, string, unknown]> = [
  ['GET', '', undefined],
  ['GET', '/logs', undefined],
  ['POST', '/cancel', undefined],
  ['POST', '/retry', undefined],
  ['PATCH', '/status', { status: 'running' }],
];

const ID_CASES: BadCase[] = HOSTILE_IDS.flatMap((id) =>
  JOB_ROUTES.map(([method, suffix, body]) => ({
    name: `${method} /api/job/${id}${suffix}`,
    method,
    path: `/api/job/${id}${suffix}`,
    body,
    status: 400,
    code: 'validation_failed',
    field: 'job_id',
    rule: 'pattern',
  })),
).concat(
  ['ci-00000000', 'deploy-deadbeef', 'unknown-type-12345678'].flatMap((id) =>
    JOB_ROUTES.map(([method, suffix, body]) => ({
      name: `${method} unknown ${id}${suffix}`,
      method,
      path: `/api/job/${id}${suffix}`,
      body,
      status: 404,
      code: 'job_not_found',
      field: 'job_id',
      rule: 'exists',
    })),
  ),
);

describe('bad input', () => {
  let server: TestServer;
  let jobId: string;

  beforeAll(async () => {
    server = await startTestServer();
    const created = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'main' },
    });
    jobId = created.body.job_id;
  });
  afterAll(async () => {
    await server.close();
  });

  async function expectRejected(testCase: BadCase): Promise<void> {
    const before = await countRows(server.context.store.db);
    const updated = await lastUpdate(server.context.store.db);
    const response = await server.request(
      testCase.method ?? 'POST',
      testCase.path.replace('{job}', jobId),
      { token: server.adminToken, body: testCase.body, headers: testCase.headers },
    );
    expect(response.status).toBe(testCase.status);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(Object.keys(response.body).sort()).toEqual([
      'code',
      'error',
      'field',
      'request_id',
      'rule',
    ]);
    expect(response.body.code).toBe(testCase.code);
    expect(response.body.field).toBe(testCase.field);
    expect(response.body.rule).toBe(testCase.rule);
    expect(typeof response.body.error).toBe('string');
    expect(response.body.error.length).toBeGreaterThan(5);
    expect(response.body.request_id).toBe(response.headers.get('x-request-id'));
    expect(await countRows(server.context.store.db)).toEqual(before);
    expect(await lastUpdate(server.context.store.db)).toBe(updated);
  }

  it.each(BODY_CASES)('body: $name', async (testCase) => {
    await expectRejected(testCase);
  });

  it.each(NON_OBJECT_BODY_CASES)('body: $name', async (testCase) => {
    await expectRejected(testCase);
  });

  it('413 reaches a client that sends the whole body', async () => {
    // Such a client (Python's urllib, for one) reads the response only after its last write.
    // When the server closed the socket with the body unread, the kernel reset the connection,
    // and the client saw a broken pipe in place of the 413. The client runs in its own process,
    // as a real one does, so the server's event loop does not pace it.
    const client = `
      const net = require('node:net');
      const [port, token] = process.argv.slice(1);
      const body = Buffer.alloc(${16 * 1024 * 1024}, 'x');
      const socket = net.connect(Number(port), '127.0.0.1');
      let answer = '';
      socket.pause();
      socket.on('data', (chunk) => (answer += chunk));
      socket.on('error', (error) => console.log('error ' + error.code));
      socket.on('end', () => console.log(answer.split('\\r\\n')[0]));
      socket.write(
        'POST /api/trigger/ci HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n' +
          'Authorization: Bearer ' + token + '\\r\\nContent-Type: application/json\\r\\n' +
          'Content-Length: ' + body.length + '\\r\\nConnection: close\\r\\n\\r\\n',
      );
      socket.write(body, () => socket.resume());
    `;
    const { port } = new URL(server.url);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const { stdout } = await promisify(execFile)(process.execPath, [
        '-e',
        client,
        port,
        server.adminToken,
      ]);
      expect(stdout.trim()).toBe('HTTP/1.1 413 Payload Too Large');
    }
  });

  it('non-object body message', async () => {
    const response = await server.request('POST', `/api/job/${jobId}/cancel`, {
      token: server.adminToken,
      body: 'null',
    });
    expect(response.body.error).toBe('body must be a JSON object');
  });

  it.each(QUERY_CASES)('query: $name', async (testCase) => {
    await expectRejected(testCase);
  });

  it.each(ID_CASES)('job id: $name', async (testCase) => {
    await expectRejected(testCase);
  });

  it('error messages name the value and the rule', async () => {
    const commit = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'xyz1234' },
    });
    expect(commit.body.error).toBe('commit must be a hex commit SHA of 7 to 64 characters');
    const prefix = await server.request('GET', '/api/admin/jobs?commit=abc', {
      token: server.adminToken,
    });
    expect(prefix.body.error).toBe(
      'query parameter commit must be a hex commit SHA or its prefix of 4 to 64 characters',
    );
    const status = await server.request('GET', '/api/admin/jobs?status=done', {
      token: server.adminToken,
    });
    expect(status.body.error).toContain('waiting, queued, running, success');
    const size = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: JSON.stringify({ commit: 'abc1234', params: { blob: 'x'.repeat(FIVE_MB) } }),
    });
    expect(size.body.error).toContain('1048576 bytes (API_BODY_LIMIT)');
    const attempt = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234', github_run_attempt: -1 },
    });
    expect(attempt.body.error).toBe(
      'github_run_attempt must be an attempt number of 1 or more, as a string of digits or an integer',
    );
  });

  it('messages use plain words', async () => {
    const cases: Array<{ path: string; body: unknown; error: string }> = [
      {
        path: `/api/job/${jobId}/cancel`,
        body: { reason: '' },
        error: 'reason must not be empty',
      },
      {
        path: TRIGGER,
        body: { commit: 'abc1234', branch: 7 },
        error: 'branch must be a string',
      },
      {
        path: '/api/agent/workers/nobody/claim',
        body: { max: 1.5 },
        error: 'max must be an integer',
      },
      {
        path: '/api/agent/workers/nobody/claim',
        body: { max: 1, wait_seconds: 'soon' },
        error: 'wait_seconds must be a number',
      },
      {
        path: '/api/agent/workers/nobody/status',
        body: { status: ['draining'] },
        error: 'status must be a string, or must be one of online, draining, offline',
      },
      {
        path: TRIGGER,
        body: { commit: 'abc1234', github_run_id: '5', github_run_attempt: '0' },
        error:
          'github_run_attempt must be an attempt number of 1 or more, as a string of digits or an integer',
      },
      {
        path: '/api/trigger/Bad_Type',
        body: { commit: 'abc1234' },
        error:
          'path parameter type must be a lower-case letter followed by up to 62 lower-case letters, digits or dashes',
      },
      {
        path: '/api/recovery/execute',
        body: { procedure: 'Bad!' },
        error:
          'procedure must be a lower-case letter followed by up to 62 lower-case letters, digits, underscores or dashes',
      },
    ];
    for (const { path, body, error } of cases) {
      const response = await server.request('POST', path, { token: server.adminToken, body });
      expect(response.status, path).toBe(400);
      expect(response.body.error).toBe(error);
    }
  });

  it('says how to fix a param name and a repeated query', async () => {
    const param = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234', params: { '': 'x' } },
    });
    expect(param.body.error).toBe(
      'params has a param with an empty name; give each param a name of 1 to 100 characters, ' +
        'which reaches the steps as SLIPWAY_PARAM_<NAME>',
    );
    const repeated = await server.request('GET', '/api/admin/jobs?limit=1&limit=2', {
      token: server.adminToken,
    });
    expect(repeated.body.error).toBe('query parameter limit appears 2 times; send it once');
    const unknown = await server.request('POST', `${TRIGGER}?commit=abc1234`, {
      token: server.adminToken,
      body: { commit: 'abc1234' },
    });
    expect(unknown.body.error).toBe('query parameter commit is not a known field');
    const empty = await server.request('GET', '/api/admin/jobs?=x', { token: server.adminToken });
    expect(empty.body.error).toBe(
      'the query has a parameter with an empty name, as in "?=x"; remove it',
    );
    const blank = await server.request('GET', '/api/admin/jobs?%20=x', {
      token: server.adminToken,
    });
    expect(blank.body.error).toBe('query parameter " " is not a known field');
  });

  it('names header and query patterns in words', async () => {
    const keyed = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234' },
      headers: { 'idempotency-key': 'two words' },
    });
    expect(keyed.body.error).toBe(
      'header idempotency-key must be printable ASCII characters without spaces',
    );
    const audit = await server.request('GET', '/api/admin/audit-log?action=BAD', {
      token: server.adminToken,
    });
    expect(audit.body.error).toBe(
      'query parameter action must be 1 to 64 lower-case letters, underscores or dots',
    );
  });

  it('python_versions names the type without the axis', async () => {
    const response = await server.request('POST', '/api/trigger/integration-tests', {
      token: server.adminToken,
      body: { commit: 'abc1234', python_versions: ['3.12'] },
    });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe(
      'python_versions is not used by job type integration-tests: its pipeline has no matrix ' +
        'axis with from: python_versions; leave the field out or add such an axis',
    );
    const ci = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'python-axis', python_versions: ['3.12'] },
    });
    expect(ci.status).toBe(201);
  });

  it('an unknown job type comes before the body', async () => {
    const response = await server.request('POST', '/api/trigger/nosuch', {
      token: server.adminToken,
      body: {},
    });
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('job_type_not_found');
    expect(response.body.field).toBe('type');
    expect(response.body.error).toContain('defined types: ci, ');
    expect(response.body.error).not.toContain(server.context.pipelines.source);
  });

  it('invalid JSON is described once with its position', async () => {
    const response = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: '{"commit":"abc1234",}',
    });
    expect(response.status).toBe(400);
    expect(response.body.error).toMatch(/^the body is not valid JSON: .* at position 20$/);
    expect(response.body.error).not.toContain('content-type');
  });

  it('names where a bad value was', async () => {
    const token = server.adminToken;
    const job = await server.request('GET', "/api/job/ci-'1", { token });
    expect(job.status).toBe(400);
    expect(job.body.error).toBe(
      'path parameter job_id must look like <type>-<8 hex digits>, e.g. ci-a1b2c3d4',
    );
    const list = await server.request('GET', '/api/admin/jobs?status=bogus', { token });
    expect(list.status).toBe(400);
    expect(list.body.error).toMatch(/^query parameter status must be one of waiting, queued, /);
    const worker = await server.request('POST', '/api/agent/workers', {
      token,
      body: { name: 'w', hostname: 'h', executors: [], capacity: 1 },
    });
    expect(worker.status).toBe(400);
    expect(worker.body.error).toBe('executors must have at least 1 item');
  });

  it('rejects a body that is not UTF-8', async () => {
    const before = await server.context.store.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .executeTakeFirstOrThrow();
    const bytes = Buffer.concat([
      Buffer.from('{"commit":"abcdef1","branch":"x'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}'),
    ]);
    const response = await fetch(`${server.url}${TRIGGER}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${server.adminToken}`,
        'content-type': 'application/json',
      },
      body: bytes,
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ code: 'invalid_json', field: 'body', rule: 'utf8' });
    const after = await server.context.store.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .executeTakeFirstOrThrow();
    expect(after.count).toBe(before.count);

    // U+FFFD written as UTF-8 is a character like any other.
    const replacement = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abcdef1', branch: 'x\ufffd' },
    });
    expect(replacement.status).toBe(201);
  });

  it('prototype keys get their own message', async () => {
    for (const [body, key] of [
      ['{"commit":"abc1234","params":{"__proto__":{"polluted":true}}}', '__proto__'],
      ['{"commit":"abc1234","params":{"constructor":{"prototype":{}}}}', 'constructor.prototype'],
    ]) {
      const response = await server.request('POST', TRIGGER, { token: server.adminToken, body });
      expect(response.status).toBe(400);
      expect(response.body.code).toBe('invalid_json');
      expect(response.body.error).toBe(
        `the body contains the key "${key}"; such keys are rejected because they can change ` +
          'object prototypes, so rename the key',
      );
    }
  });

  it('repeated keys are found in any object', async () => {
    for (const [body, key] of [
      ['{"commit":"1234567","params":{"a":1,"b":{"a":2},"\\u0061":3}}', 'a'],
      ['{"commit":"1234567","params":{"list":[{"x":1},{"x":2}],"q":"\\"x\\":","q":0}}', 'q'],
    ]) {
      const response = await server.request('POST', TRIGGER, { token: server.adminToken, body });
      expect(response.status, body).toBe(400);
      expect(response.body.rule).toBe('uniqueKeys');
      expect(response.body.error).toContain(`the body repeats the key "${key}" in one object`);
    }
    // The same key in different objects, or as a value, is no repeat.
    const distinct = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: '{"commit":"1234567","params":{"commit":"x","list":[{"commit":1},{"commit":2}]}}',
    });
    expect(distinct.status, distinct.text).toBe(201);
  });

  it('empty JSON body is rejected on trigger', async () => {
    const response = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: '',
      headers: { 'content-type': 'application/json' },
    });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe(
      'the body is empty but Content-Type is application/json; send a JSON object',
    );
  });

  it('cancel accepts an empty JSON body', async () => {
    const created = await server.request('POST', TRIGGER, {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'cancel-empty-body' },
    });
    expect(created.status).toBe(201);
    const response = await server.request('POST', `/api/job/${created.body.job_id}/cancel`, {
      token: server.adminToken,
      body: '',
      headers: { 'content-type': 'application/json' },
    });
    expect(response.status, response.text).toBe(202);
    expect(response.body.status).toBe('cancelled');
  });

  it('params nested 30 levels deep are accepted', async () => {
    let params: unknown = 'leaf';
    for (let level = 0; level < 29; level += 1) params = { level: params };
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: 'abc1234', params },
    });
    expect(response.status).toBe(201);
  });

  it('the job table survives hostile ids', async () => {
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.status).toBe(200);
    expect(job.body.status).toBe('queued');
  });
});

/** Branch names with git's own verdict on them (`git check-ref-format --branch`). */
const BRANCHES = [
  'main',
  'feature/ünïcode-✓',
  'release/2024.1',
  'user/a-b_c',
  'deps/bump@3',
  'a/-b',
  'fix/日本語',
  'a..b',
  'feat/',
  '/feat',
  'a b',
  'x.lock',
  'a/x.lock/b',
  'a@{b',
  '-x',
  'a~1',
  'a^',
  'a:b',
  '.hidden',
  'a/.b',
  'a//b',
  'a\\b',
  'ends.',
  'a?b',
  'a*b',
  'a[b',
  'tab\there',
  'HEAD',
];

function gitAccepts(name: string): boolean {
  try {
    execFileSync('git', ['check-ref-format', '--branch', name], { cwd: '/', stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('branch names follow git', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it.each(BRANCHES)('branch %j', async (branch) => {
    const accepted = gitAccepts(branch);
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch },
    });
    if (accepted) {
      expect(response.status).toBe(201);
      const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
        token: server.adminToken,
      });
      expect(job.body.branch).toBe(branch);
    } else {
      expect(response.status).toBe(400);
      expect(response.body.field).toBe('branch');
      expect(['git-ref', 'maxLength', 'minLength']).toContain(response.body.rule);
      expect(await countRows(server.context.store.db)).toEqual(before);
    }
  });

  it('a lone "@" is rejected though git reads it as HEAD', async () => {
    // `git check-ref-format --branch @` succeeds because git expands "@" to HEAD; a branch
    // literally named "@" is not allowed by git's ref rules.
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: '@' },
    });
    expect(response.status).toBe(400);
    expect(response.body.rule).toBe('git-ref');
  });

  // git accepts these, but in logs and terminals a C1 control can start an escape sequence
  // (U+009B is CSI) and a separator can start a line.
  it.each([
    ['next line U+0085', 'fix/a\u0085b'],
    ['CSI U+009B', 'fix/a\u009b31mb'],
    ['line separator U+2028', 'fix/a\u2028b'],
    ['paragraph separator U+2029', 'fix/a\u2029b'],
  ])('branch with %s is rejected', async (_label, branch) => {
    expect(gitAccepts(branch)).toBe(true);
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch },
    });
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('validation_failed');
    expect(response.body.field).toBe('branch');
    expect(response.body.rule).toBe('git-ref');
    expect(response.body.error).toContain('line or paragraph separators');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('branch with a bidirectional override is kept', async () => {
    // Right-to-left text uses these, so they are accepted, as in a reason.
    const branch = 'fix/a\u202eb';
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch },
    });
    expect(response.status).toBe(201);
    const job = await server.request('GET', `/api/job/${response.body.job_id}`, {
      token: server.adminToken,
    });
    expect(job.body.branch).toBe(branch);
  });
});

describe('rollback without a rollback or deploy pipeline', () => {
  let server: TestServer;

  beforeAll(async () => {
    const pipelines = writePipelineFile('pipelines:\n  ci:\n    steps: [{ run: make }]\n');
    server = await startTestServer({ SLIPWAY_PIPELINES: pipelines });
  });
  afterAll(async () => {
    await server.close();
  });

  it('names the missing job types', async () => {
    const response = await server.request('POST', '/api/rollback/execute', {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('job_type_not_found');
    expect(response.body.rule).toBe('defined');
    expect(response.body).not.toHaveProperty('field');
    expect(response.body.error).toContain('neither a rollback nor a deploy job type');
  });
});
