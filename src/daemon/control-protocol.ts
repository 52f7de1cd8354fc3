// The control socket's wire format and its client, for both sides. The auth
// helper (src/cli/auth-helper.ts) imports this module and nothing heavier:
// containers/image runs the helper on every pull, so its start-up time is
// part of every pull. Keep the imports here to node built-ins and types.
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { Credentials } from '../registry/auth/credentials.js';

/**
 * The daemon's control socket (`<root>/store.sock`, mode 0600): one JSON
 * request line in, one JSON answer line out. It takes credentials from the
 * auth helper (kept in memory only), answers status queries and restarts
 * the store process. The keeper (`mount`) owns it: it answers `restart`
 * itself and passes the rest to the store process serving now, which
 * listens on a socket of its own (serverSocketPath). `flush` (write the
 * disk cache's queue out) is what the keeper asks a store process before
 * it replaces or stops it.
 */
export type ControlRequest =
  | { op: 'add-credentials'; credentials: Record<string, Credentials> }
  | { op: 'status' }
  | { op: 'restart' }
  | { op: 'flush' };

export type ControlResponse = { ok: true; [key: string]: unknown } | { ok: false; error: string };

export const SOCKET_NAME = 'store.sock';
/** The store's state directory when neither --root nor ESTARGZ_STORE_ROOT names one. */
export const DEFAULT_ROOT = '/var/lib/estargz-store';
/** The store processes' own sockets, under the state directory (mode 0700). */
export const SERVER_SOCKET_DIR = 'run';
export const serverSocketPath = (root: string, pid: number): string => join(root, SERVER_SOCKET_DIR, `server-${pid}.sock`);
/** How long `restart` may take: a new store process starting (30 s at most), then the old one finishing its requests (60 s at most). */
export const RESTART_TIMEOUT_MS = 120_000;

/** A request line longer than this is not a request: the server hangs up. */
export const MAX_REQUEST_BYTES = 1 << 20;

/** Sends one request to a running daemon. */
export function controlRequest(path: string, req: ControlRequest, timeoutMs = 10_000): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no answer from the store at ${path} within ${timeoutMs} ms`)); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => { buf += d; });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlResponse);
      } catch {
        reject(new Error(`the store at ${path} answered something that is not JSON`));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`cannot reach the store at ${path} (${err.code ?? err.message}): is \`estargz-store mount\` running with this --root?`));
    });
  });
}
