/** Secrets: read on the worker's host, given to steps as variables, masked in the output. */
import fs from 'node:fs/promises';
import type { SecretRef } from '../pipeline/types.js';
import { ExecutionError } from './executor.js';

/**
 * Reads each secret from the worker's environment or from a file. A missing secret, or one
 * from an empty variable, fails the task as `error`, naming the secret and where it was
 * looked for.
 */
export async function resolveSecrets(
  refs: readonly SecretRef[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Record<string, string>> {
  const values: Record<string, string> = {};
  for (const ref of refs) {
    if (ref.fromFile !== undefined) {
      try {
        values[ref.name] = (await fs.readFile(ref.fromFile, 'utf8')).replace(/\r?\n$/, '');
        continue;
      } catch (error) {
        if (ref.fromEnv === undefined) {
          throw new ExecutionError(
            `secret ${ref.name}: file ${ref.fromFile} cannot be read on this worker (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
          );
        }
      }
    }
    const variable = ref.fromEnv ?? ref.name;
    const value = env[variable];
    if (value === undefined) {
      throw new ExecutionError(
        `secret ${ref.name}: environment variable ${variable} is not set on this worker`,
      );
    }
    // Slipway's own settings treat an empty variable as unset, as compose's blanked secrets
    // are, and an empty secret would mask nothing.
    if (value === '') {
      throw new ExecutionError(
        `secret ${ref.name}: environment variable ${variable} is empty on this worker; ` +
          'set it, or remove the secret from the pipeline',
      );
    }
    values[ref.name] = value;
  }
  return values;
}

/**
 * The strings to mask for a set of secret values: each value, and each line of a value that
 * spans several lines (programs often print one line of a key). Longest first, so a secret
 * that contains another is masked whole.
 */
export function maskedStrings(values: Iterable<string>): string[] {
  const strings = new Set<string>();
  for (const value of values) {
    if (value.length === 0) continue;
    strings.add(value);
    for (const line of value.split(/\r?\n/)) {
      if (line.trim().length >= 3) strings.add(line);
    }
  }
  return [...strings].sort((a, b) => b.length - a.length);
}
