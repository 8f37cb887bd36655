import net from 'node:net';
import type { FastifyRequest } from 'fastify';
import type { AuditContext } from '../store/audit.js';

/**
 * The audit context of a request: the token's name, the request id and the source address,
 * and for a GitHub Actions OIDC token the claims that name its workflow run.
 */
export function auditContext(request: FastifyRequest): AuditContext {
  const oidc = request.principal?.oidc;
  return {
    actor: request.principal?.name ?? 'anonymous',
    requestId: request.id,
    source: clientAddress(request),
    ...(oidc === undefined ? {} : { actorDetails: { oidc: oidc.claims } }),
  };
}

/**
 * Returns the client's address: request.ip, which with API_TRUST_PROXY is the last address that
 * a trusted proxy added to X-Forwarded-For. A proxy may pass on text that is no address (its
 * "unknown", or a header the client wrote), which would give each invented value limits of its
 * own, so the address of the connection is used then.
 */
export function clientAddress(request: FastifyRequest): string {
  const ip = request.ip;
  if (net.isIP(ip) !== 0) return ip;
  return request.socket.remoteAddress ?? ip;
}
