/** Reading secrets on the worker: from the environment and from files. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveSecrets } from '../../src/execution/secrets.js';
import type { SecretRef } from '../../src/pipeline/types.js';
import { makeTempDir } from '../support/server.js';

const secret = (name: string, from: Partial<SecretRef> = {}): SecretRef => ({
  name,
  fromEnv: undefined,
  fromFile: undefined,
  ...from,
});

describe('resolveSecrets', () => {
  it('reads the environment and files', async () => {
    const file = path.join(makeTempDir(), 'token');
    fs.writeFileSync(file, 'from-file\n');
    const values = await resolveSecrets(
      [secret('A'), secret('B', { fromEnv: 'OTHER' }), secret('C', { fromFile: file })],
      { A: 'a-value', OTHER: 'b-value' },
    );
    expect(values).toEqual({ A: 'a-value', B: 'b-value', C: 'from-file' });
  });

  it('rejects an unset variable', async () => {
    await expect(resolveSecrets([secret('A')], {})).rejects.toThrow(
      'secret A: environment variable A is not set on this worker',
    );
  });

  it('rejects an empty variable', async () => {
    await expect(
      resolveSecrets([secret('B', { fromEnv: 'GITHUB_TOKEN' })], { GITHUB_TOKEN: '' }),
    ).rejects.toThrow('secret B: environment variable GITHUB_TOKEN is empty on this worker');
  });
});
