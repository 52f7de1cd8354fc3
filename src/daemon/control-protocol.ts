// The control socket's wire format and its client, for both sides. The auth
// helper (src/cli/auth-helper.ts) imports this module and nothing heavier:
// containers/image runs the helper on every pull, so its start-up time is
// part of every pull. Keep the imports here to node built-ins and types.
import { createConnection } from 'node:net';
import type { Credentials } from '../registry/auth/credentials.js';

/**
 * The daemon's control socket (`<root>/store.sock`, mode 0600): one JSON
 * request line in, one JSON answer line out. It takes credentials from the
 * auth helper (kept in memory only) and answers status queries.
 */
export type ControlRequest =
  | { op: 'add-credentials'; credentials: Record<string, Credentials> }
  | { op: 'status' };

export type ControlResponse = { ok: true; [key: string]: unknown } | { ok: false; error: string };

export const SOCKET_NAME = 'store.sock';
/** The store's state directory when neither --root nor ESTARGZ_STORE_ROOT names one. */
export const DEFAULT_ROOT = '/var/lib/estargz-store';
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
