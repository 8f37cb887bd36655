/**
 * Rate limits shared by the processes of an API cluster (API_WORKERS > 1), so that a token's
 * limit holds for the port and not for each process. The primary keeps each key's window and
 * hands out its quota in blocks. A process admits requests from its block and requests the
 * next one when the block runs out. A block is a quarter of what the window has left, split
 * among the processes, so blocks shrink as the quota runs low. The processes together never
 * admit more than the limit, and admit less by at most the unused blocks they still have.
 *
 * The primary also counts the processes' failed authentications per address
 * (API_AUTH_FAILURE_LIMIT). Once an address reaches the limit, it sends every process a
 * message to block the address until its window ends.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { AuthFailureLimiter } from './auth-failures.js';

const MESSAGE_TYPE = 'slipway:rate-limit';
/** Time a process waits for the primary's grant before it lets the request through. */
const GRANT_TIMEOUT_MS = 2_000;
/** A process logs a failed grant at most this often. */
const FAILURE_LOG_INTERVAL_MS = 60_000;
/** Share of a window's remaining quota handed out at once, before the split among processes. */
const BLOCK_SHARE = 4;

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

/**
 * Grants the processes' quota requests in the primary, and counts their failed
 * authentications, until the returned function is called.
 */
export function serveQuota(processes: number, pruneEveryMs = 60_000): () => void {
  const windows = new QuotaWindows(processes);
  const failures = new FailureWindows();
  const onMessage = (worker: Worker, message: unknown) => {
    if (isQuotaMessage(message)) {
      const request = message as QuotaRequest;
      const grant = windows.grant(request.key, request.timeWindow, request.max);
      if (worker.isConnected()) worker.send({ type: MESSAGE_TYPE, id: request.id, ...grant });
      return;
    }
    if (!isFailureMessage(message)) return;
    const resetAt = failures.record(message.key, message.limit, message.windowMs);
    if (resetAt === undefined) return;
    const blocked: AddressBlocked = { type: BLOCKED_TYPE, key: message.key, resetAt };
    for (const apiProcess of Object.values(cluster.workers ?? {})) {
      if (apiProcess?.isConnected() === true) apiProcess.send(blocked);
    }
  };
  cluster.on('message', onMessage);
  const timer = setInterval(() => {
    windows.prune();
    failures.prune();
  }, pruneEveryMs);
  timer.unref();
  return () => {
    cluster.off('message', onMessage);
    clearInterval(timer);
  };
}

const FAILURE_TYPE = 'slipway:auth-failure';
const BLOCKED_TYPE = 'slipway:auth-blocked';

interface AuthFailure {
  type: typeof FAILURE_TYPE;
  key: string;
  limit: number;
  windowMs: number;
}

interface AddressBlocked {
  type: typeof BLOCKED_TYPE;
  key: string;
  resetAt: number;
}

function isFailureMessage(message: unknown): message is AuthFailure {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === FAILURE_TYPE
  );
}

/** The failed authentications of each address key in all the processes, kept by the primary. */
export class FailureWindows {
  readonly #windows = new Map<string, { failures: number; resetAt: number }>();

  /**
   * Counts a failure of `key`; returns when its window ends once the count reaches `limit`
   * (the first time only), else undefined.
   */
  record(key: string, limit: number, windowMs: number, now = Date.now()): number | undefined {
    let window = this.#windows.get(key);
    if (window === undefined || window.resetAt <= now) {
      window = { failures: 0, resetAt: now + windowMs };
      this.#windows.set(key, window);
    }
    window.failures += 1;
    return window.failures === limit ? window.resetAt : undefined;
  }

  /** Forgets the windows that ended. */
  prune(now = Date.now()): void {
    for (const [key, window] of this.#windows) {
      if (window.resetAt <= now) this.#windows.delete(key);
    }
  }
}

/**
 * Makes a cluster process's failed-authentication limiter count for the whole cluster: each
 * failure is sent to the primary, and an address the processes together used up is blocked.
 */
export function shareAuthFailures(limiter: AuthFailureLimiter, windowMs: number): void {
  limiter.onFailure = (key) => {
    if (process.send === undefined || !process.connected) return;
    const failure: AuthFailure = { type: FAILURE_TYPE, key, limit: limiter.limit, windowMs };
    process.send(failure);
  };
  process.on('message', (message: unknown) => {
    if (typeof message !== 'object' || message === null) return;
    const blocked = message as Partial<AddressBlocked>;
    if (blocked.type !== BLOCKED_TYPE || typeof blocked.key !== 'string') return;
    limiter.block(blocked.key, Number(blocked.resetAt));
  });
}

interface Entry {
  windowEnd: number;
  available: number;
  allocated: number;
  exhausted: boolean;
  pending: Promise<void> | undefined;
}

type Callback = (error: Error | null, result?: { current: number; ttl: number }) => void;

/**
 * The @fastify/rate-limit store of a cluster process. A request that needs a new block waits
 * for the primary; one that arrives meanwhile for the same key waits for the same grant.
 */
export class SharedQuotaStore {
  readonly #entries = new Map<string, Entry>();
  readonly #waiting = new Map<number, (grant: QuotaGrant) => void>();
  #nextId = 1;
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
    const now = Date.now();
    let entry = this.#entries.get(key);
    if (entry !== undefined && entry.pending !== undefined) {
      entry.pending.then(
        () => this.incr(key, callback, timeWindow, max),
        (error: Error) => callback(error),
      );
      return;
    }
    if (entry !== undefined && entry.windowEnd <= now) entry = undefined;
    if (entry !== undefined && entry.available > 0) {
      entry.available -= 1;
      callback(null, { current: entry.allocated - entry.available, ttl: entry.windowEnd - now });
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
      () => this.incr(key, callback, timeWindow, max),
      (error: Error) => callback(error),
    );
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
      const id = this.#nextId++;
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
