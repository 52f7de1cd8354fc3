import { createServer, type Server } from 'node:http';
import { enableProcessMetrics, registry } from '../metrics/registry.js';

/** Serves /metrics (Prometheus text format) and /healthz on `address` ("host:port"). */
export async function startMetricsServer(address: string, healthy: () => Promise<boolean>): Promise<Server> {
  const colon = address.lastIndexOf(':');
  // ":9590" listens on every interface, as the Go tools read it.
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '') || undefined;
  const port = Number(address.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`metrics_address ${JSON.stringify(address)} is not host:port`);
  enableProcessMetrics();
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
