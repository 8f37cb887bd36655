/**
 * `tailscale` check: requests tailscaled's LocalAPI (`GET /localapi/v0/status` over its unix
 * socket) whether the backend is `Running` and this node is online. The reply is
 * tailscale's ipnstate.Status: BackendState is one of NoState, NeedsLogin, NeedsMachineAuth,
 * Stopped, Starting or Running; Self.Online says whether the node is connected to the control
 * plane; Health lists the problems tailscaled has detected.
 */
import http from 'node:http';
import type { TailscaleCheckSettings } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';

/** tailscaled accepts LocalAPI requests only with this Host header. */
const LOCALAPI_HOST = 'local-tailscaled.sock';
const STATUS_PATH = '/localapi/v0/status';
const MAX_REPLY_BYTES = 8 * 1024 * 1024;

interface TailscaleStatus {
  Version?: string;
  BackendState?: string;
  AuthURL?: string;
  TailscaleIPs?: string[] | null;
  Health?: string[] | null;
  Self?: { HostName?: string; DNSName?: string; Online?: boolean } | null;
  CurrentTailnet?: { Name?: string } | null;
}

export async function probeTailscale(
  settings: TailscaleCheckSettings,
  context: ProbeContext,
): Promise<ProbeResult> {
  const socket = settings.socket ?? context.app.config.tailscaleSocket;
  let reply: { statusCode: number; body: string };
  try {
    reply = await getLocalApi(socket, STATUS_PATH, context.signal);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return {
        status: 'unhealthy',
        reason: `Tailscale LocalAPI socket ${socket} not found; is tailscaled running?`,
        details: { socket },
      };
    }
    if (code === 'ECONNREFUSED' || code === 'EACCES') {
      return {
        status: 'unhealthy',
        reason: `cannot connect to the Tailscale LocalAPI socket ${socket} (${code})`,
        details: { socket },
      };
    }
    throw error;
  }
  if (reply.statusCode !== 200) {
    return {
      status: 'unhealthy',
      reason: `the Tailscale LocalAPI returned HTTP ${reply.statusCode}: ${reply.body.slice(0, 200).trim()}`,
      details: { socket, status_code: reply.statusCode },
    };
  }
  let status: TailscaleStatus;
  try {
    status = JSON.parse(reply.body) as TailscaleStatus;
  } catch {
    return {
      status: 'unhealthy',
      reason: 'the Tailscale LocalAPI returned a status that is not JSON',
      details: { socket },
    };
  }
  return judge(status, socket);
}

function judge(status: TailscaleStatus, socket: string): ProbeResult {
  const health = status.Health ?? [];
  const details = {
    socket,
    backend_state: status.BackendState ?? null,
    online: status.Self?.Online ?? false,
    host_name: status.Self?.HostName ?? null,
    dns_name: status.Self?.DNSName ?? null,
    tailscale_ips: status.TailscaleIPs ?? [],
    tailnet: status.CurrentTailnet?.Name ?? null,
    version: status.Version ?? null,
    health,
  };
  if (status.BackendState !== 'Running') {
    const hint =
      status.BackendState === 'NeedsLogin' || status.BackendState === 'NeedsMachineAuth'
        ? '; log the node in with `tailscale up`'
        : status.BackendState === 'Stopped'
          ? '; start it with `tailscale up`'
          : '';
    return {
      status: 'unhealthy',
      reason: `Tailscale backend state is ${status.BackendState ?? '(missing)'}, expected Running${hint}`,
      details,
    };
  }
  if (status.Self?.Online !== true) {
    return {
      status: 'unhealthy',
      reason:
        'Tailscale is running but this node is not online (no connection to the control plane)',
      details,
    };
  }
  if (health.length > 0) {
    return {
      status: 'degraded',
      reason: `Tailscale reports: ${health.join('; ')}`,
      details,
    };
  }
  return { status: 'healthy', details };
}

function getLocalApi(
  socketPath: string,
  path: string,
  signal: AbortSignal,
): Promise<{ statusCode: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get(
      { socketPath, path, headers: { host: LOCALAPI_HOST }, signal },
      (response) => {
        const chunks: Buffer[] = [];
        let total = 0;
        response.on('data', (chunk: Buffer) => {
          total += chunk.length;
          if (total > MAX_REPLY_BYTES) {
            request.destroy(new Error(`LocalAPI reply is larger than ${MAX_REPLY_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on('end', () =>
          resolve({
            statusCode: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('error', reject);
  });
}
