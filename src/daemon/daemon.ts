/**
 * The keeper side of `estargz-store mount`: this process mounts, keeps the
 * FUSE connection for the mount's whole life (src/fuse/keeper.ts) and runs
 * the store itself in a child process (src/daemon/server.ts), which it
 * replaces on `restart` and after a crash without unmounting. It owns what
 * must be one per mount across those replacements: the mount, the control
 * socket (it answers `restart` and passes the rest on to the store process
 * serving now) and the readiness notice to systemd.
 */
import type { Logger } from '../log/logger.js';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:net';
import { Keeper, type KeeperStatus } from '../fuse/keeper.js';
import { FS_NAME, checkFuseAvailable, prepareMountpoint } from '../fs/mount.js';
import { startControlServer } from './control.js';
import { SERVER_SOCKET_DIR, SOCKET_NAME, controlRequest, serverSocketPath, type ControlRequest, type ControlResponse } from './control-protocol.js';
import { notifyReady } from './sd-notify.js';
import type { ServerArgs } from './server.js';
import { storeProcessEnv, storeProcessFlags } from './store-process-flags.js';

/** The store process's program: resolved once, loaded anew by every store process (a restart runs the code installed now). */
const SERVER_ENTRY = fileURLToPath(new URL('./server.js', import.meta.url));
/** How long a request for the store process waits for one to serve (a successor to a crashed one is starting). */
const SERVING_WAIT_MS = 10_000;
const FLUSH_TIMEOUT_MS = 10_000;

export interface DaemonOptions {
  /** Config file as given (read by each store process anew). */
  configPath?: string;
  /** State directory (disk cache, control socket). */
  root: string;
  mountpoint: string;
  logLevel?: string;
  /** The keeper process's logger. */
  log: Logger;
  /** Passed to store processes (tests). */
  env?: NodeJS.ProcessEnv;
}

/** What `status --json` reports besides the layers. */
export interface ServingStatus extends Omit<KeeperStatus, 'mountpoint'> {
  keeperPid: number;
  keeperFds: number;
  keeperRssBytes: number;
}

export interface Daemon {
  keeper: Keeper;
  control: Server;
  stop(): Promise<void>;
}

/** The store process serving now; waits a little while a successor starts. */
async function serving(keeper: Keeper): Promise<number> {
  const deadline = Date.now() + SERVING_WAIT_MS;
  while (keeper.pid === undefined) {
    if (Date.now() > deadline) throw new Error('no store process is serving (a successor is starting); try again');
    await new Promise((r) => setTimeout(r, 50));
  }
  return keeper.pid;
}

async function servingStatus(keeper: Keeper): Promise<ServingStatus> {
  const { mountpoint: _m, ...s } = keeper.status();
  void _m;
  const fds = await readdir('/proc/self/fd').then((f) => f.length, () => -1);
  return { ...s, keeperPid: process.pid, keeperFds: fds, keeperRssBytes: process.memoryUsage.rss() };
}

/** Asks the serving store process to write its disk-cache queue out (best effort: a restart or stop goes on regardless). */
async function flushServing(keeper: Keeper, root: string, log: Logger): Promise<void> {
  const pid = keeper.pid;
  if (pid === undefined) return;
  await controlRequest(serverSocketPath(root, pid), { op: 'flush' }, FLUSH_TIMEOUT_MS).catch((err: Error) => log.warn({ pid, err: err.message }, 'the store process did not flush its disk cache'));
}

function keeperHandler(keeper: Keeper, root: string, log: Logger): (req: ControlRequest) => Promise<ControlResponse> {
  return async (req) => {
    if (req.op === 'restart') {
      log.info('restart requested');
      await flushServing(keeper, root, log);
      try {
        const r = await keeper.restart();
        return { ok: true, pid: r.pid, previousPid: r.previousPid, readyMs: Math.round(r.readyMs), totalMs: Math.round(r.totalMs) };
      } catch (err) {
        return { ok: false, error: (err as Error).message };
      }
    }
    if (req.op === 'flush') return { ok: false, error: 'flush is asked of store processes, not of the keeper' };
    const pid = await serving(keeper);
    const res = await controlRequest(serverSocketPath(root, pid), req, req.op === 'status' ? 10_000 : 30_000);
    if (req.op === 'status' && res.ok) return { ...res, ...await servingStatus(keeper) };
    return res;
  };
}

/**
 * Mounts the store at `mountpoint` under a keeper, starts the first store
 * process and the control socket; resolves once the store serves.
 */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { log } = opts;
  const mountpoint = resolve(opts.mountpoint);
  // The state directory holds the control socket and the cache: owner only.
  await mkdir(opts.root, { recursive: true, mode: 0o700 });
  // Store processes' sockets left by a previous run.
  await rm(join(opts.root, SERVER_SOCKET_DIR), { recursive: true, force: true });
  await checkFuseAvailable();
  await prepareMountpoint(mountpoint, log);
  const serverArgs: ServerArgs = { root: resolve(opts.root), ...(opts.configPath && { config: resolve(opts.configPath) }), ...(opts.logLevel && { logLevel: opts.logLevel }) };
  const keeper = await Keeper.start({
    mount: { mountpoint, fsname: FS_NAME, subtype: FS_NAME, allowOther: true },
    entry: SERVER_ENTRY,
    args: [JSON.stringify(serverArgs)],
    execArgv: [...storeProcessFlags(opts.env ?? process.env), ...process.execArgv],
    env: storeProcessEnv(opts.env ?? process.env),
    init: { readdirplus: true },
    logger: log,
  });
  let control: Server;
  try {
    control = await startControlServer(join(opts.root, SOCKET_NAME), keeperHandler(keeper, opts.root, log));
  } catch (err) {
    await keeper.stop();
    throw err;
  }
  log.info({ mountpoint, pid: keeper.pid }, 'store mounted');
  await notifyReady(`serving ${mountpoint}`, log);
  let stopping: Promise<void> | undefined;
  return {
    keeper,
    control,
    stop: () => {
      stopping ??= (async () => {
        log.info({ mountpoint }, 'stopping');
        control.close();
        await flushServing(keeper, opts.root, log);
        await keeper.stop();
        await rm(join(opts.root, SOCKET_NAME), { force: true });
        log.info({ mountpoint }, 'store unmounted');
      })();
      return stopping;
    },
  };
}
