import type { Logger } from '../log/logger.js';
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import type { Credentials, RuntimeCredentials } from '../registry/auth/credentials.js';
import type { RepoRef } from '../registry/client.js';
import { parseReference } from '../registry/reference.js';
import { MAX_REQUEST_BYTES, type ControlRequest, type ControlResponse } from './control-protocol.js';

// The wire format and the client live in control-protocol.ts (the auth helper loads only that).
export { SOCKET_NAME, controlRequest, type ControlRequest, type ControlResponse } from './control-protocol.js';

export interface ControlHandlers {
  /** Where received credentials are noted (which repositories, never the values). */
  log: Logger;
  credentials: RuntimeCredentials;
  status: () => Promise<unknown>;
  /** Stores credentials (default: into `credentials`); returns the repositories. */
  addCredentials?: (creds: Record<string, Credentials>) => RepoRef[];
  /** Writes the disk cache's queue out (asked before this process is replaced or stopped). */
  flush?: () => Promise<void>;
  /**
   * Credentials for a repository were just stored; called before the helper
   * gets its answer (the daemon clears the resolver's failure memory here, as
   * podman looks the layer up again as soon as the helper exits).
   */
  credentialsAdded?: (repo: RepoRef) => void;
}

/** Stores credentials keyed by each reference's registry and repository; returns the repositories. */
export function addCredentials(store: RuntimeCredentials, creds: Record<string, Credentials>): RepoRef[] {
  const repos: RepoRef[] = [];
  for (const [ref, c] of Object.entries(creds)) {
    const parsed = parseReference(ref);
    store.set(parsed.registry, parsed.repository, {
      ...(c.username && { username: c.username }),
      ...(c.password && { password: c.password }),
      ...(c.identityToken && { identityToken: c.identityToken }),
    });
    repos.push({ registry: parsed.registry, repository: parsed.repository });
  }
  return repos;
}

/** What a store process answers on its own socket (the keeper passes requests on to it). */
export function storeControlHandler(h: ControlHandlers): (req: ControlRequest) => Promise<ControlResponse> {
  return (req) => handle(req, h);
}

async function handle(req: ControlRequest, h: ControlHandlers): Promise<ControlResponse> {
  if (req.op === 'add-credentials') {
    const repos = h.addCredentials ? h.addCredentials(req.credentials ?? {}) : addCredentials(h.credentials, req.credentials ?? {});
    // Only which repositories, never the values.
    h.log.info({ refs: Object.keys(req.credentials ?? {}) }, 'credentials received from the auth helper');
    for (const repo of repos) h.credentialsAdded?.(repo);
    return { ok: true, count: repos.length };
  }
  if (req.op === 'status') return { ok: true, layers: await h.status() };
  if (req.op === 'flush') {
    await h.flush?.();
    return { ok: true };
  }
  return { ok: false, error: `unknown op ${JSON.stringify((req as { op?: unknown }).op)}` };
}

/** Listens on `path` (mode 0600, a stale socket file replaced): one JSON request line, one answer line, per connection. */
export async function startControlServer(path: string, handler: (req: ControlRequest) => Promise<ControlResponse>): Promise<Server> {
  await rm(path, { force: true }); // a socket file left by a previous run
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST_BYTES) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let req: ControlRequest;
      try {
        req = JSON.parse(buf.slice(0, nl)) as ControlRequest;
      } catch {
        sock.end(JSON.stringify({ ok: false, error: 'request is not JSON' }) + '\n');
        return;
      }
      handler(req).then(
        (res) => sock.end(JSON.stringify(res) + '\n'),
        (err: Error) => sock.end(JSON.stringify({ ok: false, error: err.message }) + '\n'),
      );
    });
    sock.on('error', () => {});
  });
  const previous = process.umask(0o177); // the socket is created 0600: credentials pass through it
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(previous);
  }
  await chmod(path, 0o600);
  return server;
}
