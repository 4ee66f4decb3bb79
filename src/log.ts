import { pino, type Logger } from 'pino';

/** JSON logs on stdout. Authorization headers and secrets never reach a log line: nothing logs headers wholesale. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'portcullis' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['password', '*.password', 'token', '*.token', 'authorization', '*.authorization'], censor: '[redacted]' },
  });
}
