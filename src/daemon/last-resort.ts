import type { Telemetry } from '../metrics/telemetry.js';

/**
 * What the daemon does with an error nothing handled. Every known failure
 * path ends in an error for the layer concerned; reaching this is a bug. The
 * choice is to log it (with its stack, at error level), count it
 * (`estargz_store_unexpected_errors_total`) and keep serving, because exiting
 * takes the files of every running container on the node with it, while the
 * state an unhandled error can leave behind is one layer's or one request's
 * (the store keeps no cross-layer state that a failed request half-updates).
 * An operator who prefers a restart can alert on the counter.
 *
 * `metrics` is absent in the keeper process, which exports none (it logs only).
 */
export function installLastResortHandlers({ log, metrics }: Pick<Telemetry, 'log'> & Partial<Pick<Telemetry, 'metrics'>>): void {
  process.on('unhandledRejection', (reason: unknown) => {
    metrics?.unexpectedErrors.inc({ kind: 'unhandled_rejection' });
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'BUG: unhandled promise rejection; the store keeps serving');
  });
  process.on('uncaughtException', (err: Error) => {
    metrics?.unexpectedErrors.inc({ kind: 'uncaught_exception' });
    log.error({ err: err.stack ?? err.message }, 'BUG: uncaught exception; the store keeps serving');
  });
}
