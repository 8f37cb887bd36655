import { afterEach, describe, expect, it, vi } from 'vitest';
import { ExecutionError } from '../../src/execution/executor.js';
import { resolveContainerUser } from '../../src/execution/container-user.js';

describe('container user', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('keeps the image USER without a user', () => {
    expect(resolveContainerUser(null)).toBeUndefined();
  });

  it('passes a user spec as written', () => {
    expect(resolveContainerUser('1234:1234')).toBe('1234:1234');
    expect(resolveContainerUser('app')).toBe('app');
  });

  it('resolves worker to the process ids', () => {
    // Both are optional in Node's types, because Windows lacks them.
    const posix = process as NodeJS.Process & { getuid(): number; getgid(): number };
    vi.spyOn(posix, 'getuid').mockReturnValue(4321);
    vi.spyOn(posix, 'getgid').mockReturnValue(8765);
    expect(resolveContainerUser('worker')).toBe('4321:8765');
  });

  it('rejects worker without process ids', () => {
    const getuid = Object.getOwnPropertyDescriptor(process, 'getuid');
    Object.defineProperty(process, 'getuid', { value: undefined, configurable: true });
    try {
      expect(() => resolveContainerUser('worker')).toThrow(ExecutionError);
      expect(() => resolveContainerUser('worker')).toThrow(/set a uid:gid instead/);
    } finally {
      Object.defineProperty(process, 'getuid', getuid!);
    }
  });
});
