import type { RegistryTraffic } from '../registry/traffic.js';
import type { StoreMetrics } from './store-metrics.js';

/**
 * The registry traffic hook that feeds the Prometheus metrics (the daemon
 * passes it to its registry client). Only labelled traffic is counted:
 * auth-token requests, a blob's HEAD for its size and pushes carry no
 * operation. Every labelled request is counted here and nowhere else (the
 * resolver labels its footer and TOC reads 'footer' and 'toc').
 */
export function trafficMetrics(m: StoreMetrics): RegistryTraffic {
  return {
    request(r) {
      if (!r.operation) return;
      m.registryRequests.inc({ operation: r.operation });
      m.fetchDuration.observe({ operation: r.operation }, r.seconds);
      if (r.bytes > 0) m.registryBytes.inc({ operation: r.operation }, r.bytes);
    },
    retry(r) {
      if (r.operation) m.registryRetries.inc({ operation: r.operation, reason: r.reason });
    },
    rangeSplit(r) {
      if (r.operation) m.registryRangeSplits.inc({ operation: r.operation, reason: r.reason });
    },
  };
}
