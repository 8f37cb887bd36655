/**
 * Finding the cgroup below which a worker makes its step cgroups, from mountinfo and cgroup
 * texts written here. The mount points are temporary folders, so nothing under /sys changes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stepCgroupParent } from '../../src/execution/cgroup.js';

const folders: string[] = [];

function tempFolder(): string {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-cgroup-parent-'));
  folders.push(folder);
  return folder;
}

/** Returns a mountinfo line for a cgroup2 mount of `root` at `mountPoint`. */
function cgroup2Line(id: number, root: string, mountPoint: string, options = 'rw'): string {
  return `${id} 31 0:38 ${root} ${mountPoint} ${options},relatime - cgroup2 cgroup2 rw`;
}

afterAll(() => {
  for (const folder of folders) fs.rmSync(folder, { recursive: true, force: true });
});

describe('stepCgroupParent', () => {
  it('skips an unusable mount for a later one', () => {
    const writable = tempFolder();
    const mountinfo = [
      '22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw',
      cgroup2Line(41, '/', '/nonexistent/slipway-cgroup', 'ro'),
      cgroup2Line(42, '/', writable),
    ].join('\n');
    expect(stepCgroupParent(mountinfo, '0::/\n')).toBe(writable);
  });

  it('joins the own cgroup to the mount point', () => {
    const mountPoint = tempFolder();
    fs.mkdirSync(path.join(mountPoint, 'system.slice', 'slipway.service'), { recursive: true });
    const mountinfo = cgroup2Line(41, '/', mountPoint);
    expect(stepCgroupParent(mountinfo, '0::/system.slice/slipway.service\n')).toBe(
      path.join(mountPoint, 'system.slice', 'slipway.service'),
    );
  });

  it('reads a mount of part of the hierarchy', () => {
    const mountPoint = tempFolder();
    fs.mkdirSync(path.join(mountPoint, 'inner'));
    const mountinfo = [
      cgroup2Line(41, '/elsewhere', '/nonexistent/slipway-cgroup'),
      cgroup2Line(42, '/docker/abc', mountPoint),
    ].join('\n');
    expect(stepCgroupParent(mountinfo, '0::/docker/abc/inner\n')).toBe(
      path.join(mountPoint, 'inner'),
    );
    expect(stepCgroupParent(mountinfo, '0::/docker/abc\n')).toBe(mountPoint);
    expect(stepCgroupParent(mountinfo, '0::/docker/abcd\n')).toBeUndefined();
  });

  it('decodes escaped mount points', () => {
    const mountPoint = path.join(tempFolder(), 'with space');
    fs.mkdirSync(mountPoint);
    const mountinfo = cgroup2Line(41, '/', mountPoint.replace(' ', '\\040'));
    expect(stepCgroupParent(mountinfo, '0::/\n')).toBe(mountPoint);
  });

  it('returns undefined without cgroup v2', () => {
    const mountinfo = cgroup2Line(41, '/', tempFolder());
    expect(stepCgroupParent(mountinfo, '4:memory:/user.slice\n')).toBeUndefined();
  });
});
