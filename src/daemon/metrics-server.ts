import { createServer, type Server } from 'node:http';
import type { StoreMetrics } from '../metrics/store-metrics.js';

/** Serves /metrics (Prometheus text format) and /healthz on `address` ("host:port"). */
export async function startMetricsServer(address: string, metrics: StoreMetrics, healthy: () => Promise<boolean>): Promise<Server> {
  const colon = address.lastIndexOf(':');
  // ":9590" listens on every interface, as the Go tools read it.
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '') || undefined;
  const port = Number(address.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`metrics_address ${JSON.stringify(address)} is not host:port`);
  metrics.enableProcessMetrics();
  const { registry } = metrics;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      }, (err: Error) => {
        res.writeHead(500);
        res.end(err.message);
      });
    } else if (path === '/healthz') {
      healthy().then((ok) => {
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
        res.end(ok ? 'ok\n' : 'the mount does not answer\n');
      }, () => {
        res.writeHead(503);
        res.end();
      });
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

/**
 * The metrics listener of a store process under a keeper. Its address is
 * one per mount while two store processes run side by side during a
 * restart: the new one binds it as soon as the old one lets go (the old
 * closes it when told to hand over; a dead one has let go already), trying
 * every RETRY_MS, so a scrape misses it for a few milliseconds at most.
 * The first process of a mount binds at once: an address that is taken
 * then is a configuration error, reported by `mount`.
 */
export class MetricsListener {
  private server: Server | undefined;
  private closed = false;
  static readonly RETRY_MS = 10;
  /** Longest a successor waits for the address before saying so (it keeps trying). */
  static readonly WARN_AFTER_MS = 90_000;

  constructor(private readonly address: string, private readonly metrics: StoreMetrics, private readonly healthy: () => Promise<boolean>) {}

  async bindNow(): Promise<void> {
    this.server = await startMetricsServer(this.address, this.metrics, this.healthy);
  }

  /** Binds in the background, once the address is free. */
  bindWhenFree(log: (msg: string, extra: Record<string, unknown>) => void, bound?: (waitedMs: number) => void): void {
    const started = Date.now();
    let warned = false;
    const attempt = (): void => {
      if (this.closed) return;
      startMetricsServer(this.address, this.metrics, this.healthy).then((server) => {
        if (this.closed) server.close();
        else {
          this.server = server;
          bound?.(Date.now() - started);
        }
      }, (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EADDRINUSE') {
          log('the metrics listener cannot be started', { address: this.address, err: err.message });
          return;
        }
        if (!warned && Date.now() - started > MetricsListener.WARN_AFTER_MS) {
          warned = true;
          log('the metrics address is still taken by another process; still trying', { address: this.address });
        }
        setTimeout(attempt, MetricsListener.RETRY_MS).unref();
      });
    };
    attempt();
  }

  close(): void {
    this.closed = true;
    this.server?.close();
    this.server?.closeAllConnections();
  }
}
