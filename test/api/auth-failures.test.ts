import { describe, expect, it } from 'vitest';
import { addressKey, AuthFailureLimiter } from '../../src/api/auth-failures.js';

describe('addressKey', () => {
  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:192.0.2.1', '192.0.2.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002::1', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2::', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ])('%s counts as %s', (address, key) => {
    expect(addressKey(address)).toBe(key);
  });

  it('groups one /64 and splits two', () => {
    expect(addressKey('2001:db8:1:2::a')).toBe(addressKey('2001:db8:1:2:ffff::b'));
    expect(addressKey('2001:db8:1:2::a')).not.toBe(addressKey('2001:db8:1:3::a'));
  });
});

describe('AuthFailureLimiter', () => {
  const start = 1_000_000;

  it('blocks after the limit until the minute ends', () => {
    const limiter = new AuthFailureLimiter(3);
    for (let failure = 1; failure <= 3; failure += 1) {
      expect(limiter.isBlocked('192.0.2.1', start)).toBe(false);
      expect(limiter.recordFailure('192.0.2.1', start).failures).toBe(failure);
    }
    expect(limiter.isBlocked('192.0.2.1', start)).toBe(true);
    const fourth = limiter.recordFailure('192.0.2.1', start + 15_000);
    expect(fourth.failures).toBe(4);
    expect(fourth.retryAfterSeconds).toBe(45);
    expect(limiter.isBlocked('192.0.2.1', start + 59_999)).toBe(true);
    expect(limiter.isBlocked('192.0.2.1', start + 60_000)).toBe(false);
    expect(limiter.recordFailure('192.0.2.1', start + 60_000).failures).toBe(1);
  });

  it('counts each address on its own', () => {
    const limiter = new AuthFailureLimiter(1);
    limiter.recordFailure('192.0.2.1', start);
    expect(limiter.isBlocked('192.0.2.1', start)).toBe(true);
    expect(limiter.isBlocked('192.0.2.2', start)).toBe(false);
  });

  it('forgets the oldest address when full', () => {
    const limiter = new AuthFailureLimiter(1);
    limiter.recordFailure('192.0.2.1', start);
    for (let index = 0; index < 10_000; index += 1) {
      limiter.recordFailure(`10.${index >> 8}.${index & 255}.1`, start + 1);
    }
    expect(limiter.isBlocked('192.0.2.1', start + 2)).toBe(false);
    expect(limiter.isBlocked('10.0.0.1', start + 2)).toBe(true);
  });
});
