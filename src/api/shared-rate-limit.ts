/**
 * Rate limits shared by the processes of an API cluster (API_WORKERS > 1), so that a token's
 * limit holds for the port and not for each process. The primary keeps each key's window and
 * hands out its quota in blocks. A process admits requests from its block and requests the
 * next one when the block runs out. A block is a quarter of what the window has left, split
 * among the processes, so blocks shrink as the quota runs low. The processes together never
 * admit more than the limit, and admit less by at most the unused blocks they still have.
 *
 * Failed authentications per address (API_AUTH_FAILURE_LIMIT) are a quota of the same kind: a
 * process reserves one from its block before it looks up a token, and keeps it for the next
 * request when the token is valid.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import {
  addressKey,
  AuthFailureLimiter,
  FAILURE_WINDOW_MS,
  type FailureLimit,
  type Reservation,
} from './auth-failures.js';

const MESSAGE_TYPE = 'slipway:rate-limit';
/** Time a process waits for the primary's grant before it lets the request through. */
const GRANT_TIMEOUT_MS = 2_000;
/** A process logs a failed grant at most this often. */
const FAILURE_LOG_INTERVAL_MS = 60_000;
/** Share of a window's remaining quota handed out at once, before the split among processes. */
const BLOCK_SHARE = 4;
/** Id of the next quota request, shared by every store in the process so that grants find theirs. */
let nextRequestId = 1;

interface QuotaRequest {
  type: typeof MESSAGE_TYPE;
  id: number;
  key: string;
  timeWindow: number;
  max: number;
}

interface QuotaGrant {
  type: typeof MESSAGE_TYPE;
  id: number;
  /** Requests the process may admit from now until the window ends. */
  granted: number;
  /** Requests the window has handed out to all processes, this grant included. */
  allocated: number;
  /** Milliseconds until the window ends. */
  ttl: number;
}

function isQuotaMessage(message: unknown): message is { type: typeof MESSAGE_TYPE } {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === MESSAGE_TYPE
  );
}

/** The windows of every key, kept by the cluster's primary. */
export class QuotaWindows {
  readonly #windows = new Map<string, { start: number; timeWindow: number; allocated: number }>();

  constructor(readonly processes: number) {}

  /** Hands out the next block of `key`'s window, starting a new window when the last ended. */
  grant(
    key: string,
    timeWindow: number,
    max: number,
    now = Date.now(),
  ): Omit<QuotaGrant, 'type' | 'id'> {
    let window = this.#windows.get(key);
    if (window === undefined || window.start + window.timeWindow <= now) {
      window = { start: now, timeWindow, allocated: 0 };
      this.#windows.set(key, window);
    }
    const remaining = max - window.allocated;
    const granted =
      remaining <= 0 ? 0 : Math.max(1, Math.ceil(remaining / (BLOCK_SHARE * this.processes)));
    window.allocated += granted;
    return { granted, allocated: window.allocated, ttl: window.start + window.timeWindow - now };
  }

  /** Forgets the windows that ended, so keys seen once do not stay in memory. */
  prune(now = Date.now()): void {
    for (const [key, window] of this.#windows) {
      if (window.start + window.timeWindow <= now) this.#windows.delete(key);
    }
  }

  get size(): number {
    return this.#windows.size;
  }
}

/** Grants the processes' quota requests in the primary until the returned function is called. */
export function serveQuota(processes: number, pruneEveryMs = 60_000): () => void {
  const windows = new QuotaWindows(processes);
  const onMessage = (worker: Worker, message: unknown) => {
    if (!isQuotaMessage(message)) return;
    const request = message as QuotaRequest;
    const grant = windows.grant(request.key, request.timeWindow, request.max);
    if (worker.isConnected()) worker.send({ type: MESSAGE_TYPE, id: request.id, ...grant });
  };
  cluster.on('message', onMessage);
  const timer = setInterval(() => windows.prune(), pruneEveryMs);
  timer.unref();
  return () => {
    cluster.off('message', onMessage);
    clearInterval(timer);
  };
}

interface Entry {
  windowEnd: number;
  available: number;
  allocated: number;
  exhausted: boolean;
  pending: Promise<void> | undefined;
}

type Callback = (error: Error | null, result?: { current: number; ttl: number }) => void;
/** A Callback that also gets the entry whose block admitted the request, if one did. */
type TakeCallback = (
  error: Error | null,
  result?: { current: number; ttl: number },
  admittedBy?: Entry,
) => void;

/**
 * The @fastify/rate-limit store of a cluster process. A request that needs a new block waits
 * for the primary; one that arrives meanwhile for the same key waits for the same grant.
 */
export class SharedQuotaStore {
  readonly #entries = new Map<string, Entry>();
  readonly #waiting = new Map<number, (grant: QuotaGrant) => void>();
  #failureLoggedAt = 0;

  constructor(readonly logger: Logger) {
    process.on('message', (message: unknown) => {
      if (!isQuotaMessage(message)) return;
      const grant = message as QuotaGrant;
      this.#waiting.get(grant.id)?.(grant);
    });
    const timer = setInterval(() => this.#prune(), 60_000);
    timer.unref();
  }

  incr(key: string, callback: Callback, timeWindow: number, max: number): void {
    this.#take(key, (error, result) => callback(error, result), timeWindow, max);
  }

  /**
   * Takes one request of `key` as incr does, and passes `giveBack` with an admitted request,
   * which returns the request to the block it came from for the next request. It does nothing
   * once that block's window has ended or an entry for a new window has replaced it.
   */
  take(
    key: string,
    timeWindow: number,
    max: number,
    callback: (
      error: Error | null,
      result?: { current: number; ttl: number },
      giveBack?: () => void,
    ) => void,
  ): void {
    this.#take(
      key,
      (error, result, admittedBy) => {
        if (admittedBy === undefined) {
          callback(error, result);
          return;
        }
        callback(error, result, () => this.#giveBack(key, admittedBy));
      },
      timeWindow,
      max,
    );
  }

  #take(key: string, callback: TakeCallback, timeWindow: number, max: number): void {
    const now = Date.now();
    let entry = this.#entries.get(key);
    if (entry !== undefined && entry.pending !== undefined) {
      entry.pending.then(
        () => this.#take(key, callback, timeWindow, max),
        (error: Error) => callback(error),
      );
      return;
    }
    if (entry !== undefined && entry.windowEnd <= now) entry = undefined;
    if (entry !== undefined && entry.available > 0) {
      entry.available -= 1;
      const result = { current: entry.allocated - entry.available, ttl: entry.windowEnd - now };
      callback(null, result, entry);
      return;
    }
    if (entry !== undefined && entry.exhausted) {
      callback(null, { current: max + 1, ttl: entry.windowEnd - now });
      return;
    }
    const fresh: Entry = entry ?? {
      windowEnd: now,
      available: 0,
      allocated: 0,
      exhausted: false,
      pending: undefined,
    };
    this.#entries.set(key, fresh);
    fresh.pending = this.#ask(key, timeWindow, max).then(
      (grant) => {
        fresh.pending = undefined;
        fresh.windowEnd = Date.now() + grant.ttl;
        fresh.available += grant.granted;
        fresh.allocated = grant.allocated;
        fresh.exhausted = grant.granted === 0;
      },
      (error: Error) => {
        fresh.pending = undefined;
        this.#entries.delete(key);
        if (Date.now() - this.#failureLoggedAt >= FAILURE_LOG_INTERVAL_MS) {
          this.#failureLoggedAt = Date.now();
          this.logger.warn({ err: error }, 'rate limit not applied: no grant from the primary');
        }
        throw error;
      },
    );
    fresh.pending.then(
      () => this.#take(key, callback, timeWindow, max),
      (error: Error) => callback(error),
    );
  }

  /**
   * Returns one request to `entry`'s block. While a grant for the entry is pending, the
   * request is added to what is left, and the grant adds its block on top.
   */
  #giveBack(key: string, entry: Entry, now = Date.now()): void {
    if (this.#entries.get(key) !== entry || entry.windowEnd <= now) return;
    entry.available += 1;
  }

  /** Returns this store for every route, since the limit is one per token for the whole API. */
  child(): SharedQuotaStore {
    return this;
  }

  #ask(key: string, timeWindow: number, max: number): Promise<QuotaGrant> {
    return new Promise((resolve, reject) => {
      if (process.send === undefined || !process.connected) {
        reject(new Error('the API cluster primary is not connected; rate limit not applied'));
        return;
      }
      const id = nextRequestId++;
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(
          new Error(`the API cluster primary sent no rate-limit grant in ${GRANT_TIMEOUT_MS} ms`),
        );
      }, GRANT_TIMEOUT_MS);
      this.#waiting.set(id, (grant) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        resolve(grant);
      });
      const request: QuotaRequest = { type: MESSAGE_TYPE, id, key, timeWindow, max };
      process.send(request);
    });
  }

  #prune(now = Date.now()): void {
    for (const [key, entry] of this.#entries) {
      if (entry.pending === undefined && entry.windowEnd <= now) this.#entries.delete(key);
    }
  }
}

/**
 * Returns the store class for @fastify/rate-limit, which makes the store itself. Requests are
 * let through when no grant arrives (its `skipOnError`), and a warning is logged.
 */
export function sharedQuotaStore(logger: Logger): new () => SharedQuotaStore {
  return class extends SharedQuotaStore {
    constructor() {
      super(logger);
    }
  };
}

/**
 * The failed-authentication limit of a cluster process. Failures are reserved from the quota
 * that the primary keeps for each address, so the processes together allow at most the limit
 * in a window. When the primary sends no grant, the process counts on its own.
 */
export class SharedFailureLimit implements FailureLimit {
  readonly #store: SharedQuotaStore;
  readonly #alone: AuthFailureLimiter;
  /** Window end of the last rejection of each address key, so that each window logs once. */
  readonly #rejectedUntil = new Map<string, number>();

  constructor(
    readonly limit: number,
    logger: Logger,
  ) {
    this.#store = new SharedQuotaStore(logger);
    this.#alone = new AuthFailureLimiter(limit);
  }

  reserve(address: string): Promise<Reservation> {
    const key = `auth-failure:${addressKey(address)}`;
    return new Promise((resolve) => {
      this.#store.take(key, FAILURE_WINDOW_MS, this.limit, (error, result, giveBack) => {
        if (error !== null || result === undefined) {
          resolve(this.#alone.reserve(address));
          return;
        }
        resolve(this.#reservation(key, result.current, result.ttl, giveBack));
      });
    });
  }

  #reservation(
    key: string,
    current: number,
    ttl: number,
    giveBack: (() => void) | undefined,
    now = Date.now(),
  ): Reservation {
    const retryAfterSeconds = Math.max(1, Math.ceil(ttl / 1000));
    if (current <= this.limit) {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        giveBack?.();
      };
      return { granted: true, retryAfterSeconds, firstRejection: false, release };
    }
    const rejectedUntil = this.#rejectedUntil.get(key);
    const firstRejection = rejectedUntil === undefined || rejectedUntil <= now;
    if (firstRejection) {
      if (this.#rejectedUntil.size >= 10_000) this.#rejectedUntil.clear();
      this.#rejectedUntil.set(key, now + ttl);
    }
    return { granted: false, retryAfterSeconds, firstRejection, release: () => {} };
  }
}
