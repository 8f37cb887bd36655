/**
 * Removal of workspaces whose steps left directories without write or search permission.
 * Root ignores those permissions, so when the tests run as root the removal runs in a child
 * process as the user nobody (uid 65534).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { removeTree } from '../../src/execution/checkout.js';

const NOBODY = 65534;
const ROOT_DIR = path.resolve(import.meta.dirname, '../..');

/** Builds a workspace with a directory that its owner cannot search and one it cannot write. */
function lockedWorkspace(link?: string): { base: string; workspace: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-locked-'));
  const workspace = path.join(base, 'ci-0000abcd.1.0');
  fs.mkdirSync(path.join(workspace, 'src', 'pkg', 'mod', 'cache'), { recursive: true });
  fs.writeFileSync(path.join(workspace, 'src', 'pkg', 'mod', 'cache', 'file'), 'x');
  fs.mkdirSync(path.join(workspace, 'src', 'hidden', 'inner'), { recursive: true });
  fs.writeFileSync(path.join(workspace, 'src', 'hidden', 'inner', 'file'), 'x');
  // Inside a directory that the first removal cannot read, so the link is still there after it.
  if (link !== undefined) fs.symlinkSync(link, path.join(workspace, 'src', 'hidden', 'link'));
  // Go's module cache is read-only: 0555 directories.
  fs.chmodSync(path.join(workspace, 'src', 'pkg', 'mod', 'cache'), 0o555);
  fs.chmodSync(path.join(workspace, 'src', 'pkg', 'mod'), 0o555);
  fs.chmodSync(path.join(workspace, 'src', 'hidden'), 0o000);
  return { base, workspace };
}

/** Runs removeTree(dir) as a user whom permissions bind, and returns its error output. */
function removeAsUnprivileged(base: string, dir: string): Promise<string> {
  if (process.getuid?.() !== 0) {
    return removeTree(dir).then(
      () => '',
      (error: unknown) => String(error),
    );
  }
  chownTree(base, NOBODY);
  const script =
    `import { removeTree } from ${JSON.stringify(path.join(ROOT_DIR, 'src/execution/checkout.ts'))};` +
    `await removeTree(${JSON.stringify(dir)});`;
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    { cwd: ROOT_DIR, uid: NOBODY, gid: NOBODY, encoding: 'utf8' },
  );
  return Promise.resolve(result.status === 0 ? '' : result.stderr);
}

function chownTree(dir: string, uid: number): void {
  fs.chownSync(dir, uid, uid);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(full, uid);
    else fs.lchownSync(full, uid, uid);
  }
}

describe('workspace removal', () => {
  it('removes directories without permissions', async () => {
    const { base, workspace } = lockedWorkspace();
    try {
      expect(await removeAsUnprivileged(base, workspace)).toBe('');
      expect(fs.existsSync(workspace)).toBe(false);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('leaves a symlinked directory alone', async () => {
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-outside-'));
    fs.chmodSync(outside, 0o500);
    // Owned by the removing user, so a removal that followed the link could chmod it.
    if (process.getuid?.() === 0) fs.chownSync(outside, NOBODY, NOBODY);
    const { base, workspace } = lockedWorkspace(outside);
    try {
      expect(await removeAsUnprivileged(base, workspace)).toBe('');
      expect(fs.existsSync(workspace)).toBe(false);
      expect(fs.statSync(outside).mode & 0o777).toBe(0o500);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });
});
