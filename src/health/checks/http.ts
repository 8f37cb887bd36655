/** `http` check: the deployed service returns an expected status and body, fast enough. */
import http from 'node:http';
import https from 'node:https';
import type { HttpCheckSettings } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';

/** Bytes of the body read when looking for expect_body; a longer body is not searched further. */
const MAX_BODY_BYTES = 1024 * 1024;

export async function probeHttp(
  settings: HttpCheckSettings,
  { signal }: ProbeContext,
): Promise<ProbeResult> {
  const started = performance.now();
  const readBody = settings.expectBody !== undefined && settings.method === 'GET';
  const response = await request(settings, signal, readBody ? MAX_BODY_BYTES : 0);
  const latencyMs = response.headersMs - started;
  const details: Record<string, unknown> = {
    url: displayUrl(settings.url),
    status_code: response.statusCode,
  };

  if (!statusAccepted(response.statusCode, settings.expectStatus)) {
    const expected = settings.expectStatus?.join(', ') ?? '2xx or 3xx';
    return {
      status: 'unhealthy',
      reason: `HTTP ${response.statusCode} from ${details.url}, expected ${expected}`,
      latencyMs,
      details,
    };
  }
  if (readBody && !response.body.includes(settings.expectBody!)) {
    return {
      status: 'unhealthy',
      reason: `the body of ${details.url} does not contain ${JSON.stringify(settings.expectBody)}`,
      latencyMs,
      details,
    };
  }
  if (settings.degradedLatencyMs !== undefined && latencyMs > settings.degradedLatencyMs) {
    return {
      status: 'degraded',
      reason: `answered in ${Math.round(latencyMs)} ms, above degraded_latency of ${settings.degradedLatencyMs} ms`,
      latencyMs,
      details,
    };
  }
  return { status: 'healthy', latencyMs, details };
}

interface HttpReply {
  statusCode: number;
  /** performance.now() when the status line and headers arrived. */
  headersMs: number;
  body: string;
}

/**
 * Sends one request on a new connection. A pooled keep-alive connection could have been
 * closed by a restarted service and fail the probe although the service is up again.
 * Redirects are not followed because a 3xx is the service's own response.
 */
function request(
  settings: HttpCheckSettings,
  signal: AbortSignal,
  maxBodyBytes: number,
): Promise<HttpReply> {
  const url = new URL(settings.url);
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const outgoing = client.request(
      url,
      { method: settings.method, headers: settings.headers, agent: false, signal },
      (response) => {
        const headersMs = performance.now();
        const chunks: Buffer[] = [];
        let total = 0;
        response.on('data', (chunk: Buffer) => {
          if (total >= maxBodyBytes) return;
          chunks.push(chunk);
          total += chunk.length;
        });
        response.on('end', () =>
          resolve({
            statusCode: response.statusCode ?? 0,
            headersMs,
            body: Buffer.concat(chunks).subarray(0, maxBodyBytes).toString('utf8'),
          }),
        );
        response.on('error', reject);
      },
    );
    outgoing.on('error', (error) =>
      reject(
        new Error(`request to ${displayUrl(settings.url)} failed: ${error.message}`, {
          cause: error,
        }),
      ),
    );
    outgoing.end();
  });
}

function statusAccepted(status: number, expected: number[] | undefined): boolean {
  if (expected === undefined) return status >= 200 && status < 400;
  return expected.includes(status);
}

/** Removes user name and password from a URL, so credentials never reach metrics or logs. */
function displayUrl(url: string): string {
  const parsed = new URL(url);
  parsed.username = '';
  parsed.password = '';
  return parsed.toString();
}
