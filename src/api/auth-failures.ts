/**
 * The limit on failed authentications per source address (API_AUTH_FAILURE_LIMIT). The
 * per-token limit of @fastify/rate-limit runs after authentication, so requests with a missing
 * or wrong token never reach it. Without this limit a client could try tokens as fast as the
 * server responds.
 *
 * It counts failures in fixed one-minute windows per address, as @fastify/rate-limit's local
 * store counts requests. A request that may fail reserves one failure before its token is
 * looked up, and gives it back when the token is valid, so requests that run at the same time
 * never pass the limit together. Once an address has used up its failures, its tokens are no
 * longer looked up, except tokens that were valid when last checked, so a right guess gets the
 * same 429 as a wrong one. This limiter is separate from the plugin's because the plugin counts
 * every request that passes its hook and cannot check an address without counting it.
 *
 * In a cluster (API_WORKERS > 1) the processes reserve failures from the primary instead, which
 * keeps one window per address for all of them (see SharedFailureLimit in shared-rate-limit.ts).
 */
import net from 'node:net';

/** Length of a counting window, in milliseconds. */
export const FAILURE_WINDOW_MS = 60_000;
/** Maximum number of addresses tracked at once, which bounds the memory an attack can use. */
const MAX_ADDRESSES = 10_000;

/** The result of a reservation of one failed authentication. */
export interface Reservation {
  /** False when the address has used up its failures for the window, so the request gets 429. */
  granted: boolean;
  /** Seconds until the window ends and the address may fail again. */
  retryAfterSeconds: number;
  /** True for the first rejection of the address in its window, which the server logs. */
  firstRejection: boolean;
  /** Gives the failure back, for a request whose token was valid. Does nothing if not granted. */
  release(): void;
}

/** Failed authentications per address, counted by reservation. */
export interface FailureLimit {
  /** Failed authentications an address may have per minute. */
  readonly limit: number;
  /** Reserves one failed authentication of the address before its request is checked. */
  reserve(address: string): Reservation | Promise<Reservation>;
}

interface FailureWindow {
  failures: number;
  resetAt: number;
  rejected: boolean;
}

/** The limit within one process. */
export class AuthFailureLimiter implements FailureLimit {
  readonly #windows = new Map<string, FailureWindow>();

  /** @param limit failed authentications an address may have per minute */
  constructor(readonly limit: number) {}

  reserve(address: string, now = Date.now()): Reservation {
    const key = addressKey(address);
    let window = this.#windows.get(key);
    if (window === undefined || window.resetAt <= now) {
      this.#windows.delete(key);
      this.#makeRoom(now);
      window = { failures: 0, resetAt: now + FAILURE_WINDOW_MS, rejected: false };
      this.#windows.set(key, window);
    }
    const retryAfterSeconds = Math.max(1, Math.ceil((window.resetAt - now) / 1000));
    if (window.failures >= this.limit) {
      const firstRejection = !window.rejected;
      window.rejected = true;
      return { granted: false, retryAfterSeconds, firstRejection, release: () => {} };
    }
    window.failures += 1;
    const reserved = window;
    let released = false;
    const release = () => {
      // A window that ended or was dropped since then no longer counts this failure.
      if (released || this.#windows.get(key) !== reserved) return;
      released = true;
      reserved.failures -= 1;
    };
    return { granted: true, retryAfterSeconds, firstRejection: false, release };
  }

  /** Drops ended windows, and the oldest one if the map is still full. */
  #makeRoom(now: number): void {
    if (this.#windows.size < MAX_ADDRESSES) return;
    for (const [key, window] of this.#windows) {
      if (window.resetAt <= now) this.#windows.delete(key);
    }
    // Windows are inserted when they start, so the first key has the oldest window.
    if (this.#windows.size >= MAX_ADDRESSES) {
      this.#windows.delete(this.#windows.keys().next().value!);
    }
  }
}

/**
 * Returns the key an address is counted under: an IPv4 address as it is (also when Node reports
 * it IPv4-mapped, as `::ffff:192.0.2.1`), and an IPv6 address by its /64 prefix. A single IPv6
 * host usually has a whole /64 to itself, so counting single addresses would let it switch
 * addresses to reset its count.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (!net.isIPv6(address)) return address;
  const groups = expandIpv6(address.split('%')[0]!);
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/** Returns the eight 16-bit groups of an IPv6 address in lowercase hex without leading zeros. */
function expandIpv6(address: string): string[] {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const toGroups = (part: string | undefined) =>
    part === undefined || part === '' ? [] : part.split(':');
  const headGroups = toGroups(head);
  const tailGroups = toGroups(tail);
  // An embedded IPv4 address, as in 64:ff9b::192.0.2.1, fills the last two groups.
  const lengthOf = (groups: string[]) =>
    groups.reduce((sum, group) => sum + (group.includes('.') ? 2 : 1), 0);
  const zeros = Array.from({ length: 8 - lengthOf(headGroups) - lengthOf(tailGroups) }, () => '0');
  return [...headGroups, ...zeros, ...tailGroups].map((group) =>
    group.includes('.') ? group : parseInt(group, 16).toString(16),
  );
}
