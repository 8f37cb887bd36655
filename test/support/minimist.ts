/**
 * A git repository made from the minimist package as published on the npm registry
 * (`npm pack minimist`), which ships its own tape test suite. The packed tarball is kept in
 * the temp folder, so repeated runs ask the registry only once.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { commitFiles, git } from './execution.js';
import { makeTempDir } from './server.js';

export const MINIMIST_VERSION = '1.2.8';

function packedTarball(): string {
  const dir = path.join(os.tmpdir(), 'slipway-minimist-pack');
  const tarball = path.join(dir, `minimist-${MINIMIST_VERSION}.tgz`);
  if (!fs.existsSync(tarball)) {
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('npm', ['pack', `minimist@${MINIMIST_VERSION}`, '--pack-destination', dir], {
      stdio: 'ignore',
    });
  }
  return tarball;
}

export interface MinimistRepository {
  dir: string;
  /** The package as published: its tests pass. */
  good: string;
  /** One test changed to expect the wrong value: the suite fails. */
  broken: string;
}

/**
 * Builds the repository. `extraFiles` are committed with the package, e.g. a copy of the CA
 * bundle that a container's npm needs.
 */
export function makeMinimistRepository(
  extraFiles: Record<string, string> = {},
): MinimistRepository {
  const dir = makeTempDir('slipway-minimist-');
  execFileSync('tar', ['-xzf', packedTarball(), '-C', dir, '--strip-components=1']);
  git(dir, 'init', '--quiet', '--initial-branch=main');
  const good = commitFiles(dir, extraFiles, `minimist ${MINIMIST_VERSION} as published`);
  const testFile = path.join(dir, 'test', 'whitespace.js');
  const original = fs.readFileSync(testFile, 'utf8');
  const changed = original.replace("t.equal(x, '\\t');", "t.equal(x, ' ');");
  if (changed === original) throw new Error('the whitespace test no longer has the expected line');
  const broken = commitFiles(dir, { 'test/whitespace.js': changed }, 'break the whitespace test');
  return { dir, good, broken };
}

/** Steps that install the tape version minimist names, then run its suite. */
export const MINIMIST_STEPS = `
    steps:
      - name: install tape
        run: >-
          npm install --no-save --no-package-lock --ignore-scripts --no-audit --no-fund
          --prefer-offline "tape@$(node -p "require('./package.json').devDependencies.tape")"
      - name: test
        run: node_modules/.bin/tape 'test/**/*.js'
`;
