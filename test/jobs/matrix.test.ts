import { describe, expect, it } from 'vitest';
import { expandMatrix, MatrixError } from '../../src/jobs/matrix.js';

const NODE = { name: 'node_version', from: 'node_versions', values: ['22'] };

describe('expandMatrix', () => {
  it('takes whole numbers as their decimal text', () => {
    expect(expandMatrix([NODE], { node_versions: [20, '22', 24] })).toEqual([
      { node_version: '20' },
      { node_version: '22' },
      { node_version: '24' },
    ]);
  });

  it('rejects a fractional number, whose trailing zeros JSON has dropped', () => {
    let caught: unknown;
    try {
      expandMatrix(
        [NODE],
        JSON.parse('{"node_versions": ["22", 3.10]}') as Record<string, unknown>,
      );
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(MatrixError);
    expect((caught as MatrixError).field).toBe('node_versions.1');
    expect((caught as MatrixError).message).toMatch(/JSON number 3\.1\b.*send matrix values/);
  });

  it('rejects a value with a control character', () => {
    let caught: unknown;
    try {
      expandMatrix([NODE], { node_versions: ['22', '24\u001b[2J'] });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(MatrixError);
    expect((caught as MatrixError).field).toBe('node_versions.1');
    expect((caught as MatrixError).rule).toBe('printable');
    expect((caught as MatrixError).message).toMatch(
      /^node_versions\.1 contains U\+001B, a control character or line separator;/,
    );
  });

  it('uses the defaults without the field and rejects an axis left without values', () => {
    expect(expandMatrix([NODE], {})).toEqual([{ node_version: '22' }]);
    expect(() => expandMatrix([{ ...NODE, values: [] }], {})).toThrow(/node_versions is required/);
  });
});
