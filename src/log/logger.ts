import { destination, pino, type Logger } from 'pino';

/**
 * Structured JSON logs for the whole process (pino). Credentials never go
 * into a log line: the paths below are redacted in case an object carrying
 * them is logged by mistake.
 */
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const envLevel = process.env.ESTARGZ_LOG_LEVEL;
const level = envLevel && LEVELS.includes(envLevel) ? envLevel : 'info';

export const logger: Logger = pino({
  level,
  base: { pid: process.pid },
  redact: {
    paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'token', '*.token', 'identityToken', '*.identityToken'],
    censor: '[redacted]',
  },
}, destination({ fd: 2, sync: false })); // stderr: stdout carries command output

if (envLevel && level !== envLevel) logger.warn(`ESTARGZ_LOG_LEVEL=${envLevel} is not one of ${LEVELS.join(', ')}; using info`);

export type { Logger };
