import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskedStrings } from '../../src/execution/secrets.js';
import { mask } from '../../src/worker/task-output.js';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';

const SECRET = 'hunter2-very-secret';

describe('task output on its way to the log', () => {
  let harness: ExecutionHarness;

  beforeAll(async () => {
    process.env.SLIPWAY_TEST_SPLIT_SECRET = SECRET;
    const pipelines = writePipelineFile(`
pipelines:
  awkward:
    executor: local
    secrets: [{ name: TOKEN, from_env: SLIPWAY_TEST_SPLIT_SECRET }]
    steps:
      - name: bytes
        run: |
          printf 'bad \\377\\376 bytes\\n'
          printf '\\033[31mred\\033[0m\\n'
          printf 'progress 10%%\\rprogress 100%%\\n'
          printf 'hunter2-'; sleep 0.3; printf 'very-secret end\\n'
          echo "whole $TOKEN"
          head -c 1048576 /dev/zero | tr '\\0' 'x'; printf '\\nafter-long-line\\n'
  chatty:
    executor: local
    steps:
      - name: flood
        run: head -c 300000 /dev/zero | tr '\\0' 'z'; echo; echo tail-line
  overflow:
    executor: local
    steps:
      - name: flood
        run: head -c 3000000 /dev/zero | tr '\\0' 'o'; echo; echo dropped-line
      - name: fails
        run: exit 3
`);
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_LOG_MAX_BYTES: '2097152',
    });
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('keeps awkward output intact and masks split secrets', async () => {
    const id = await harness.trigger('awkward', { commit: 'abcdef1' });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    const logs = await harness.logs(id);
    expect(logs).toContain('bad \uFFFD\uFFFD bytes');
    expect(logs).toContain('\u001b[31mred\u001b[0m');
    expect(logs).toContain('progress 10%\rprogress 100%');
    expect(logs).toContain('*** end');
    expect(logs).toContain('whole ***');
    expect(logs).not.toContain('hunter2');
    expect(logs).toContain(`${'x'.repeat(1_048_576)}\nafter-long-line`);
  });

  it('follows a large log to its end', async () => {
    const id = await harness.trigger('chatty', { commit: 'abcdef1' });
    const response = await fetch(`${harness.server.url}/api/job/${id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${harness.token}` },
    });
    const text = await response.text();
    expect(text).toContain(`${'z'.repeat(300_000)}\ntail-line`);
    expect(text).toContain('[slipway] task ended success');
  });

  it('ends a cut log with the outcome', async () => {
    const id = await harness.trigger('overflow', { commit: 'abcdef1' });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    const logs = await harness.logs(id);
    expect(logs).toContain('[slipway] log cut at 2097152 bytes');
    expect(logs).not.toContain('dropped-line');
    // The worker's own closing line went past the cut, so the API writes the outcome.
    expect(logs.slice(-400)).toMatch(
      /\n\[slipway\] task ended failure after [\d.]+ s: .*fails.*\n$/,
    );
  });

  it('masks a token that contains a secret', () => {
    const token = 'slw_abcdefghijklmnopqrstuvwxyz012345';
    expect(mask(`token ${token} end`, ['abc'])).toBe('token *** end');
    expect(mask(`token x${token} end`, ['x'])).toBe('token *** end');
    expect(mask(`a ${token}yz b`, ['5yz'])).toBe('a *** b');
    expect(mask('plain text', ['abc'])).toBe('plain text');
  });

  it('masks every occurrence and prefers the longest secret', () => {
    expect(mask('a-secret-b secret', maskedStrings(['secret', 'a-secret']))).toBe('***-b ***');
    expect(maskedStrings(['line-one\nline-two'])).toEqual([
      'line-one\nline-two',
      'line-one',
      'line-two',
    ]);
  });
});
