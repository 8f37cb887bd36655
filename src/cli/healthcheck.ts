/**
 * The container images' HEALTHCHECK command: `node dist/cli/healthcheck.js`. Exits 0 when
 * healthy and 1 when not. It imports nothing from the rest of Slipway but a small URL helper,
 * so it starts fast.
 *
 * In the `api` and `all` roles it reads GET /api/health/status on this container's port. The
 * container counts as healthy when the API responds and its own `api` component, which covers
 * its database connection, is not unhealthy. Components that the health monitor records, such
 * as a deployed service, only appear in the output: if they made the container unhealthy, a
 * restarted stack would wait forever for the API, and the health monitor that heals them would
 * never start.
 *
 * A worker is healthy while the API it claims tasks from responds and, when the worker has
 * SLIPWAY_AGENT_TOKEN, accepts that token: a revoked token stops every claim. The
 * orchestrator and the health monitor serve no HTTP, so their liveness is the process itself
 * and this exits 0.
 */

import { redactUrl, redactUrls, withoutCredentials } from '../util/url.js';

const TIMEOUT_MS = 4000;

interface HealthDocument {
  status?: string;
  components?: Record<string, { status?: string; details?: unknown } | undefined>;
}

async function fetchHealth(
  url: string,
  token?: string,
): Promise<{ code: number; body: HealthDocument }> {
  const response = await fetch(url, {
    signal: AbortSignal.timeout(TIMEOUT_MS),
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  const body = (await response.json()) as HealthDocument;
  return { code: response.status, body };
}

async function checkApi(port: string): Promise<boolean> {
  const url = `http://127.0.0.1:${port}/api/health/status`;
  const { code, body } = await fetchHealth(url);
  const own = body.components?.api?.status;
  console.log(`${url}: HTTP ${code}, overall ${body.status ?? 'missing'}, api ${own ?? 'missing'}`);
  return own !== undefined && own !== 'unhealthy';
}

async function checkWorker(port: string): Promise<boolean> {
  const base = process.env.SLIPWAY_API_URL?.trim() || `http://127.0.0.1:${port}`;
  const url = `${base.replace(/\/+$/, '')}/api/health/status`;
  const token = process.env.SLIPWAY_AGENT_TOKEN?.trim() || undefined;
  const { code, body } = await fetchHealth(withoutCredentials(url), token);
  console.log(`${redactUrl(url)}: HTTP ${code}`);
  // The status route is public. It shows the details only to a valid token, so none means
  // the API rejected the agent token.
  if (token !== undefined && (body.components?.api?.details ?? null) === null) {
    console.log('SLIPWAY_AGENT_TOKEN is unknown or revoked, so the worker can claim no task');
    return false;
  }
  return true;
}

async function check(): Promise<boolean> {
  const mode = process.env.ORCHESTRATION_MODE?.trim().toLowerCase() || 'all';
  const port = process.env.API_PORT?.trim() || '5000';
  if (mode === 'api' || mode === 'all') return checkApi(port);
  if (mode === 'worker') return checkWorker(port);
  console.log(`role ${mode} serves no HTTP; the running process is its health`);
  return true;
}

let healthy: boolean;
try {
  healthy = await check();
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  console.log(`health check failed: ${redactUrls(message)}`);
  healthy = false;
}
process.exit(healthy ? 0 : 1);
