/** The process logger: pino JSON lines, secrets redacted wherever they might appear. */
import { pino } from 'pino';

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'req.headers["x-csrf-token"]',
  'headers.cookie',
  '*.id_token',
  '*.csrf_token',
  '*.password',
  '*.current_password',
  '*.new_password',
  '*.token',
  '*.access_token',
  '*.refresh_token',
  '*.hashed_password',
  '*.ibkr_access_token',
  '*.ibkr_refresh_token',
];

export function createLogger(level: string, name = 'dollarclub'): pino.Logger {
  return pino({
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
