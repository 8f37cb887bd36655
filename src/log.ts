import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/env.js';

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

/** Query parameters whose values are secrets when a client puts one in a URL by mistake. */
const SECRET_PARAMETER = /^(.*token|.*secret|password|.*key|signature)$/i;

/**
 * Returns the URL with the values of secret-looking query parameters and any Slipway token
 * replaced, because a request line keeps the URL as the client sent it.
 */
export function redactUrl(url: string): string {
  const query = url.indexOf('?');
  const redacted =
    query < 0
      ? url
      : url.slice(0, query + 1) +
        url
          .slice(query + 1)
          .split('&')
          .map((pair) => {
            const equals = pair.indexOf('=');
            if (equals < 0) return pair;
            const name = decodeURIComponentSafe(pair.slice(0, equals));
            return SECRET_PARAMETER.test(name) ? `${pair.slice(0, equals)}=[redacted]` : pair;
          })
          .join('&');
  return redacted.replace(/slw_[A-Za-z0-9_-]+/g, 'slw_[redacted]');
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

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
        url: request.url === undefined ? undefined : redactUrl(request.url),
        host: request.host,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  };
  return destination === 1 ? pino(options) : pino(options, pino.destination(2));
}
