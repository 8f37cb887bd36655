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

  it('refuses past the limit until the minute ends', () => {
    const limiter = new AuthFailureLimiter(3);
    for (let failure = 1; failure <= 3; failure += 1) {
      expect(limiter.reserve('192.0.2.1', start).granted, `failure ${failure}`).toBe(true);
    }
    const fourth = limiter.reserve('192.0.2.1', start + 15_000);
    expect(fourth.granted).toBe(false);
    expect(fourth.firstRejection).toBe(true);
    expect(fourth.retryAfterSeconds).toBe(45);
    const fifth = limiter.reserve('192.0.2.1', start + 59_999);
    expect(fifth.granted).toBe(false);
    expect(fifth.firstRejection).toBe(false);
    expect(limiter.reserve('192.0.2.1', start + 60_000).granted).toBe(true);
  });

  it('gives a released failure back', () => {
    const limiter = new AuthFailureLimiter(2);
    limiter.reserve('192.0.2.1', start).release();
    const second = limiter.reserve('192.0.2.1', start);
    second.release();
    // A second release of the same reservation gives nothing more back.
    second.release();
    expect(limiter.reserve('192.0.2.1', start).granted).toBe(true);
    expect(limiter.reserve('192.0.2.1', start).granted).toBe(true);
    expect(limiter.reserve('192.0.2.1', start).granted).toBe(false);
  });

  it('counts reservations that are still open', () => {
    // Lookups that run at the same time each hold a failure until they end.
    const limiter = new AuthFailureLimiter(2);
    const first = limiter.reserve('192.0.2.1', start);
    const second = limiter.reserve('192.0.2.1', start);
    expect(first.granted).toBe(true);
    expect(second.granted).toBe(true);
    expect(limiter.reserve('192.0.2.1', start).granted).toBe(false);
  });

  it('counts each address on its own', () => {
    const limiter = new AuthFailureLimiter(1);
    limiter.reserve('192.0.2.1', start);
    expect(limiter.reserve('192.0.2.1', start).granted).toBe(false);
    expect(limiter.reserve('192.0.2.2', start).granted).toBe(true);
  });

  it('forgets the oldest address when full', () => {
    const limiter = new AuthFailureLimiter(1);
    limiter.reserve('192.0.2.1', start);
    for (let index = 0; index < 10_000; index += 1) {
      limiter.reserve(`10.${index >> 8}.${index & 255}.1`, start + 1);
    }
    // The last address inserted (index 9,999) is still counted, the first one is not.
    expect(limiter.reserve('10.39.15.1', start + 2).granted).toBe(false);
    expect(limiter.reserve('192.0.2.1', start + 2).granted).toBe(true);
  });
});
