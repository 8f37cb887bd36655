/** `http` check: the deployed service answers with an expected status, body and latency. */
import type { HttpCheckSettings } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';

/** Bytes of the body read when looking for expect_body; a longer body is not searched further. */
const MAX_BODY_BYTES = 1024 * 1024;

export async function probeHttp(
  settings: HttpCheckSettings,
  { signal }: ProbeContext,
): Promise<ProbeResult> {
  const started = performance.now();
  const response = await fetch(settings.url, {
    method: settings.method,
    headers: settings.headers,
    signal,
    // A redirect is an answer of the service itself; following it would probe another URL.
    redirect: 'manual',
  });
  const latencyMs = performance.now() - started;
  const details: Record<string, unknown> = {
    url: displayUrl(settings.url),
    status_code: response.status,
  };

  if (!statusAccepted(response.status, settings.expectStatus)) {
    await response.body?.cancel();
    const expected = settings.expectStatus?.join(', ') ?? '2xx or 3xx';
    return {
      status: 'unhealthy',
      reason: `HTTP ${response.status} from ${details.url}, expected ${expected}`,
      latencyMs,
      details,
    };
  }
  if (settings.expectBody !== undefined && settings.method === 'GET') {
    const body = await readText(response, MAX_BODY_BYTES);
    if (!body.includes(settings.expectBody)) {
      return {
        status: 'unhealthy',
        reason: `the body of ${details.url} does not contain ${JSON.stringify(settings.expectBody)}`,
        latencyMs,
        details,
      };
    }
  } else {
    await response.body?.cancel();
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

function statusAccepted(status: number, expected: number[] | undefined): boolean {
  if (expected === undefined) return status >= 200 && status < 400;
  return expected.includes(status);
}

/** The URL without user name and password, so credentials never reach metrics or logs. */
function displayUrl(url: string): string {
  const parsed = new URL(url);
  parsed.username = '';
  parsed.password = '';
  return parsed.toString();
}

async function readText(response: Response, maxBytes: number): Promise<string> {
  if (response.body === null) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (total < maxBytes) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.byteLength;
  }
  await reader.cancel();
  return Buffer.concat(chunks).subarray(0, maxBytes).toString('utf8');
}
