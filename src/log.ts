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

export function createLogger(level: LogLevel, name = 'slipway'): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  });
}
