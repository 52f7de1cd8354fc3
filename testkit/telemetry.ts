import { createLogger, type Logger } from '../src/log/logger.js';
import { createTelemetry, type Telemetry } from '../src/metrics/telemetry.js';

/**
 * A logger and metrics of the test's own: quiet unless ESTARGZ_LOG_LEVEL asks
 * (`npm test` sets error), and counters no other test shares, so a test can
 * read them back.
 */
export function testTelemetry(): Telemetry {
  return createTelemetry(testLog());
}

export function testLog(): Logger {
  return createLogger(process.env.ESTARGZ_LOG_LEVEL, 'silent');
}
