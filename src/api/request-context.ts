import type { FastifyRequest } from 'fastify';
import type { AuditContext } from '../store/audit.js';

/** The audit context of a request: the token's name, the request id and the source address. */
export function auditContext(request: FastifyRequest): AuditContext {
  return {
    actor: request.principal?.name ?? 'anonymous',
    requestId: request.id,
    source: request.ip,
  };
}
