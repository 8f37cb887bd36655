import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/env.js';
import { redactSecretsInUrl } from './util/url.js';

export type { Logger };

/**
 * Paths removed from every log line, so no token or secret reaches a log even when a
 * request or an error object is logged whole.
 */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["x-hub-signature-256"]',
  'headers.authorization',
  'authorization',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'password',
  '*.password',
];

interface LoggedRequest {
  method?: string;
  url?: string;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number } | null;
}

/**
 * Creates the JSON logger. Commands whose stdout carries their result log to stderr instead
 * (`destination` 2), so that the output can be piped to a JSON parser.
 */
export function createLogger(level: LogLevel, name = 'slipway', destination: 1 | 2 = 1): Logger {
  const options: pino.LoggerOptions = {
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      // Fastify's request fields, with the URL redacted. A child logger's serializers take
      // precedence over Fastify's own.
      req: (request: LoggedRequest) => ({
        method: request.method,
        url: request.url === undefined ? undefined : redactSecretsInUrl(request.url),
        host: request.host,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  };
  return destination === 1 ? pino(options) : pino(options, pino.destination(2));
}
