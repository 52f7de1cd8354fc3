import { destination, pino, type Logger } from 'pino';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/**
 * A structured JSON logger (pino) writing to stderr (stdout carries command
 * output). Each process creates one (the CLI, the keeper, the store process)
 * and passes it down. Credentials never go into a log line: the paths below
 * are redacted in case an object carrying them is logged by mistake.
 *
 * `level` is usually `ESTARGZ_LOG_LEVEL`; a value that is not a level is
 * reported in a warning and `fallback` is used.
 */
export function createLogger(level: string | undefined, fallback: Logger['level'] = 'info'): Logger {
  const valid = level !== undefined && (LOG_LEVELS as readonly string[]).includes(level);
  const logger = pino({
    level: valid ? level : fallback,
    base: { pid: process.pid },
    redact: {
      paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'token', '*.token', 'identityToken', '*.identityToken'],
      censor: '[redacted]',
    },
  }, destination({ fd: 2, sync: false }));
  if (level && !valid) logger.warn(`ESTARGZ_LOG_LEVEL=${level} is not one of ${LOG_LEVELS.join(', ')}; using ${fallback}`);
  return logger;
}

export type { Logger };
