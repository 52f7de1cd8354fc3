import type { Logger } from '../log/logger.js';
import { StoreMetrics } from './store-metrics.js';

/**
 * What every room reports through: the process's logger and its metrics.
 * The daemon creates one per process and passes it down; nothing imports a
 * logger or a metric from a module, so a test builds its own, and two
 * stores in one process (tests, a restart's successor) never share counters.
 */
export interface Telemetry {
  readonly log: Logger;
  readonly metrics: StoreMetrics;
}

export function createTelemetry(log: Logger): Telemetry {
  return { log, metrics: new StoreMetrics() };
}
