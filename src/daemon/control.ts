import { chmod, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { logger } from '../log/logger.js';
import type { Credentials, RuntimeCredentials } from '../registry/auth/credentials.js';
import { parseReference } from '../registry/reference.js';

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
const MAX_REQUEST_BYTES = 1 << 20;

export interface ControlHandlers {
  credentials: RuntimeCredentials;
  status: () => Promise<unknown>;
}

/** Stores credentials keyed by each reference's registry and repository; returns how many. */
export function addCredentials(store: RuntimeCredentials, creds: Record<string, Credentials>): number {
  let n = 0;
  for (const [ref, c] of Object.entries(creds)) {
    const parsed = parseReference(ref);
    store.set(parsed.registry, parsed.repository, {
      ...(c.username && { username: c.username }),
      ...(c.password && { password: c.password }),
      ...(c.identityToken && { identityToken: c.identityToken }),
    });
    n++;
  }
  return n;
}

async function handle(req: ControlRequest, h: ControlHandlers): Promise<ControlResponse> {
  if (req.op === 'add-credentials') {
    const count = addCredentials(h.credentials, req.credentials ?? {});
    // Only which repositories, never the values.
    logger.info({ refs: Object.keys(req.credentials ?? {}) }, 'credentials received from the auth helper');
    return { ok: true, count };
  }
  if (req.op === 'status') return { ok: true, layers: await h.status() };
  return { ok: false, error: `unknown op ${JSON.stringify((req as { op?: unknown }).op)}` };
}

export async function startControlServer(path: string, h: ControlHandlers): Promise<Server> {
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
      handle(req, h).then(
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
