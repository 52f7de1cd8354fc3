import { destination, pino, type Logger } from 'pino';

/**
 * Structured JSON logs for the whole process (pino). Credentials never go
 * into a log line: the paths below are redacted in case an object carrying
 * them is logged by mistake.
 */
export const logger: Logger = pino({
  level: process.env.ESTARGZ_LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  redact: {
    paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'token', '*.token', 'identityToken', '*.identityToken'],
    censor: '[redacted]',
  },
}, destination({ fd: 2, sync: false })); // stderr: stdout carries command output

export type { Logger };
