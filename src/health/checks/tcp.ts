/** `tcp` check: a TCP connection to host and port opens. */
import net from 'node:net';
import type { TcpCheckSettings } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';

export async function probeTcp(
  settings: TcpCheckSettings,
  { signal }: ProbeContext,
): Promise<ProbeResult> {
  const started = performance.now();
  await connect(settings.host, settings.port, signal);
  const latencyMs = performance.now() - started;
  const details = { host: settings.host, port: settings.port };
  if (settings.degradedLatencyMs !== undefined && latencyMs > settings.degradedLatencyMs) {
    return {
      status: 'degraded',
      reason: `connected in ${Math.round(latencyMs)} ms, above degraded_latency of ${settings.degradedLatencyMs} ms`,
      latencyMs,
      details,
    };
  }
  return { status: 'healthy', latencyMs, details };
}

function connect(host: string, port: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, signal });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', (error) => {
      socket.destroy();
      reject(new Error(`cannot connect to ${host}:${port}: ${error.message}`, { cause: error }));
    });
  });
}
