/**
 * Starts the real API on 127.0.0.1 with a fresh data directory, for tests. Nothing is mocked:
 * the store is a real SQLite file and requests go through the real HTTP server.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createContext, type AppContext } from '../../src/app/context.js';
import { startApi, type ApiRole } from '../../src/app/roles.js';
import { loadConfig } from '../../src/config/env.js';
import { createLogger, type Logger } from '../../src/log.js';
import { createToken } from '../../src/store/tokens.js';
import type { TokenRole } from '../../src/store/schema.js';

export interface TestServer {
  url: string;
  dataDir: string;
  context: AppContext;
  api: ApiRole;
  adminToken: string;
  /** Creates a token with the role and returns it in clear. */
  token(role: TokenRole, name?: string): Promise<string>;
  /** Fetches a path of the server with an optional bearer token and JSON body. */
  request(
    method: string,
    urlPath: string,
    options?: { token?: string; body?: unknown; headers?: Record<string, string> },
    // Tests read many different JSON shapes; typing each one would not catch more bugs.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ): Promise<{ status: number; body: any; headers: Headers; text: string }>;
  close(): Promise<void>;
}

export function makeTempDir(prefix = 'slipway-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestServerOptions {
  /** Runs after the context is created and before the API starts, e.g. to set services. */
  prepare?: (context: AppContext) => void;
  /** The logger of the server, in place of one at LOG_LEVEL on stdout. */
  logger?: Logger;
}

export async function startTestServer(
  env: Record<string, string> = {},
  options: TestServerOptions = {},
): Promise<TestServer> {
  const dataDir = env.SLIPWAY_DATA_DIR ?? makeTempDir();
  const config = loadConfig({
    API_PORT: '0',
    LOG_LEVEL: 'silent',
    SLIPWAY_ADMIN_TOKEN: 'slw_test-admin-token-0000000000000000',
    ...env,
    SLIPWAY_DATA_DIR: dataDir,
  });
  const context = await createContext(config, {
    logger: options.logger ?? createLogger(config.logLevel),
  });
  options.prepare?.(context);
  const api = await startApi(context);
  const url = api.url;
  let counter = 0;
  const server: TestServer = {
    url,
    dataDir,
    context,
    api,
    adminToken: config.api.adminToken!,
    async token(role, name = `${role}-${++counter}`) {
      const { token } = await context.store.write((trx) => createToken(trx, name, role));
      return token;
    },
    async request(method, urlPath, options = {}) {
      const headers: Record<string, string> = { ...options.headers };
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
      let body: string | undefined;
      if (options.body !== undefined) {
        body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
        headers['content-type'] ??= 'application/json';
      }
      const response = await fetch(`${url}${urlPath}`, { method, headers, body });
      const text = await response.text();
      let parsed: unknown = undefined;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return { status: response.status, body: parsed, headers: response.headers, text };
    },
    async close() {
      await api.stop();
      await context.store.close();
    },
  };
  return server;
}
