/**
 * A Unix socket in front of the real Docker engine, for tests of an engine that stops
 * responding or drops its connections. Every byte goes to the real engine; only the failure is
 * made here: `freeze` keeps the bytes of both directions (a hung daemon sends no response), `thaw`
 * passes them on, `dropConnections` closes every open connection, and `down` does that and removes
 * the socket until `up` (as an engine restart does).
 */
import net from 'node:net';
import path from 'node:path';
import { makeTempDir } from './server.js';

export interface EngineProxy {
  /** The proxy's socket, for DOCKER_HOST as `unix://<socketPath>`. */
  socketPath: string;
  freeze(): void;
  /**
   * Holds each request whose first bytes match `pattern` (its request line), and the rest of
   * its connection, as `freeze` does for all, until `thaw`.
   */
  holdRequests(pattern: RegExp): void;
  /** Connections held by `holdRequests` now. */
  heldRequests(): number;
  thaw(): void;
  dropConnections(): void;
  /** Drops every connection and stops listening, so that connecting fails until `up`. */
  down(): Promise<void>;
  up(): Promise<void>;
  /** Client connections open now, such as requests that the engine has not responded to. */
  openConnections(): number;
  close(): Promise<void>;
}

export async function startEngineProxy(
  engineSocket = '/var/run/docker.sock',
): Promise<EngineProxy> {
  const socketPath = path.join(makeTempDir('slipway-engine-proxy-'), 'docker.sock');
  type Pair = { client: net.Socket; engine: net.Socket };
  const pairs = new Set<Pair>();
  /** Bytes held while frozen, with the socket each is for, in arrival order. */
  let heldChunks: Array<{ to: net.Socket; chunk: Buffer }> = [];
  let frozen = false;

  /** Requests whose first bytes match it are held, with the rest of their connection. */
  let holdPattern: RegExp | undefined;
  const heldPairs = new Set<Pair>();

  const forward = (pair: Pair, from: net.Socket, to: net.Socket) => {
    from.on('data', (chunk: Buffer) => {
      if (from === pair.client && holdPattern?.test(chunk.toString('latin1'))) heldPairs.add(pair);
      if (frozen || heldPairs.has(pair)) heldChunks.push({ to, chunk });
      else to.write(chunk);
    });
  };

  const server = net.createServer((client) => {
    const engine = net.connect(engineSocket);
    const pair = { client, engine };
    pairs.add(pair);
    forward(pair, client, engine);
    forward(pair, engine, client);
    const end = () => {
      pairs.delete(pair);
      heldPairs.delete(pair);
      client.destroy();
      engine.destroy();
    };
    client.on('error', end).on('close', end);
    engine.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));

  const dropConnections = () => {
    for (const { client, engine } of pairs) {
      client.destroy();
      engine.destroy();
    }
  };
  return {
    socketPath,
    freeze() {
      frozen = true;
    },
    holdRequests(pattern: RegExp) {
      holdPattern = pattern;
    },
    heldRequests: () => heldPairs.size,
    thaw() {
      frozen = false;
      holdPattern = undefined;
      heldPairs.clear();
      const release = heldChunks;
      heldChunks = [];
      for (const { to, chunk } of release) if (!to.destroyed) to.write(chunk);
    },
    dropConnections,
    async down() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      dropConnections();
      await closed;
    },
    async up() {
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    },
    openConnections: () => pairs.size,
    async close() {
      dropConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
