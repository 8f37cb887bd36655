/**
 * Serialised responses of read endpoints, kept while the database has not changed. Each entry
 * records SQLite's data_version when it was read (see Store.dataVersion); any commit by any
 * process changes that number, so an entry is served only while no commit happened since it
 * was read. Entries also expire after a short time, because a few answers depend on the clock
 * as well as on the rows (a queued job's reason names workers whose heartbeat is recent).
 */
interface Entry {
  version: number;
  expiresAt: number;
  body: string;
}

export class ResponseCache {
  readonly #entries = new Map<string, Entry>();

  constructor(
    readonly maxEntries = 1_000,
    readonly ttlMs = 1_000,
  ) {}

  get(key: string, version: number, now = Date.now()): string | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.version !== version || entry.expiresAt <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.body;
  }

  set(key: string, version: number, body: string, now = Date.now()): void {
    if (this.#entries.size >= this.maxEntries && !this.#entries.has(key)) {
      // Oldest first: a Map iterates in insertion order.
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
    this.#entries.set(key, { version, expiresAt: now + this.ttlMs, body });
  }

  get size(): number {
    return this.#entries.size;
  }
}
