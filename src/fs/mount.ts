import type { Logger } from '../log/logger.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { execFile } from 'node:child_process';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadAddon } from '../fuse/native.js';
import { FuseError, type OpName } from '../fuse/protocol.js';
import type { Awaitable, FuseOperations } from '../fuse/types.js';
import { Errno, FsAnswer, errnoName, toErrno } from './errno.js';
import type { StoreFs } from './store-fs.js';

const run = promisify(execFile);

export const FS_NAME = 'estargz-store';

/** umount2 flag: detach now, finish when the last user is gone. */
const MNT_DETACH = 2;

/** How the store's operations are bounded and noted (the mount itself is the keeper's: src/daemon/daemon.ts). */
export interface StoreOpOptions {
  /** The store process's logger and metrics (fuse_op_duration_seconds, fuse_op_errors_total). */
  telemetry: Telemetry;
  /** Longest a read may take before the kernel gets ETIMEDOUT: slow but progressing reads must not be cut. */
  readTimeoutMs?: number;
  /** Longest any other request may take (lookups resolve layers: bounded by the resolver's own timeout). */
  opTimeoutMs?: number;
  /** Noted on every request, so that background work (disk-cache writes) waits for a quiet moment: the engine's clock, passed down. */
  activity?: { note(): void };
}

/** Finds a mount at `path` in /proc/self/mountinfo: its filesystem type, or undefined. */
async function mountAt(path: string): Promise<string | undefined> {
  // No mountinfo (no /proc in this namespace): nothing found mounted, as the caller's fallback expects.
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  let found: string | undefined;
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    const mountPoint = fields[4]?.replace(/\\040/g, ' ');
    if (mountPoint === path && dash > 0) found = fields[dash + 1];
  }
  return found;
}

/**
 * Whether the mount at `path` still answers (a killed keeper leaves "Transport
 * endpoint is not connected"; a request caught in flight gets ECONNABORTED). A name that does not exist is probed: the
 * mount root's own attributes may come from the kernel's cache.
 */
export async function mountAnswers(path: string): Promise<boolean> {
  const probe = stat(join(path, `.estargz-store-probe-${process.pid}`)).then(() => true, (err: NodeJS.ErrnoException) => err.code !== 'ENOTCONN' && err.code !== 'ECONNABORTED' && err.code !== 'EIO');
  const timeout = new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref());
  return Promise.race([probe, timeout]);
}

/** Detaches whatever is mounted at `path` (umount2 MNT_DETACH through the addon, else `umount -l`). */
async function detach(path: string): Promise<void> {
  let rc: number;
  try {
    rc = loadAddon().umount(path, MNT_DETACH);
  } catch {
    rc = -1;
  }
  if (rc !== 0) await run('umount', ['-l', path]);
}

/**
 * Makes the mountpoint usable: a stale mount left by a killed store is
 * unmounted; a mountpoint that a live store (or anything else) serves is
 * refused with a message.
 */
export async function prepareMountpoint(mountpoint: string, log: Logger): Promise<void> {
  const fstype = await mountAt(mountpoint);
  if (fstype !== undefined) {
    if (await mountAnswers(mountpoint)) {
      throw new Error(`${mountpoint} is already mounted (${fstype}) and answering: another store is serving it; stop it first`);
    }
    log.warn({ mountpoint, fstype }, 'cleaning a stale mount left by a store that did not unmount');
    await detach(mountpoint);
  }
  await mkdir(mountpoint, { recursive: true });
}

/** Checks what FUSE needs, naming the install step when something is missing. */
export async function checkFuseAvailable(): Promise<void> {
  try {
    await stat('/dev/fuse');
  } catch {
    throw new Error('/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or give the container the device');
  }
  loadAddon();
}

const isPromise = <T>(v: Awaitable<T>): v is Promise<T> => typeof (v as Promise<T> | undefined)?.then === 'function';

/**
 * The store's operations as the FUSE session calls them, each one timed
 * (fuse_op_duration_seconds), its errors counted (fuse_op_errors_total,
 * ENOENT excepted) and mapped to errno in one place (errno.ts, which logs
 * what went wrong with the path), and the activity clock noted. Answers that
 * are ready are given synchronously; one that waits is bounded in time
 * (ETIMEDOUT), so that a request never hangs in the kernel.
 */
export function storeOperations(fs: StoreFs, opts: StoreOpOptions): FuseOperations {
  const { activity, telemetry: { log, metrics } } = opts;
  const wrap = <A extends unknown[], T>(op: string, timeoutMs: number, describe: (args: A) => string, fn: (...args: A) => Awaitable<T>) => {
    // The op's histogram child, found once: observe({ op }) would hash the labels on every request (several µs on a path that costs tens).
    const duration = metrics.fuseOpDuration.labels({ op });
    const failed = (err: unknown, started: number, args: A): FuseError => {
      duration.observe((performance.now() - started) / 1000);
      const errno = toErrno(err, op, describe(args), log);
      if (errno !== Errno.ENOENT) metrics.fuseOpErrors.inc({ op, errno: errnoName(errno) });
      return new FuseError(-errno, errnoName(errno));
    };
    return (...args: A): Awaitable<T> => {
      activity?.note();
      const started = performance.now();
      let v: Awaitable<T>;
      try {
        v = fn(...args);
      } catch (err) {
        throw failed(err, started, args);
      }
      if (!isPromise(v)) {
        duration.observe((performance.now() - started) / 1000);
        return v;
      }
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          log.warn({ op, path: describe(args), ms: timeoutMs }, 'FUSE request unanswered in time; answered ETIMEDOUT');
          reject(new FsAnswer(Errno.ETIMEDOUT));
        }, timeoutMs);
      });
      return Promise.race([v, timeout]).then(
        (x) => {
          clearTimeout(timer);
          duration.observe((performance.now() - started) / 1000);
          return x;
        },
        (err: unknown) => {
          clearTimeout(timer);
          throw failed(err, started, args);
        },
      );
    };
  };
  const opMs = opts.opTimeoutMs ?? 60_000;
  const readMs = opts.readTimeoutMs ?? 300_000;
  const at = (a: unknown[]): string => fs.describe(a[0] as number);
  const under = (a: unknown[]): string => fs.describe(a[0] as number, a[1] as string);
  return {
    lookup: wrap('lookup', opMs, under, (parent: number, name: string) => fs.lookup(parent, name)),
    forget: (nodeid, nlookup) => fs.forget(nodeid, nlookup),
    attach: (notifier) => fs.attach(notifier),
    getattr: wrap('getattr', opMs, at, (id: number) => fs.getattr(id)),
    readdirplus: wrap('readdirplus', opMs, at, (id: number, offset: number, size: number) => fs.readdirplus(id, offset, size)),
    read: wrap('read', readMs, at, (id: number, offset: number, size: number) => fs.read(id, offset, size)),
    readlink: wrap('readlink', opMs, at, (id: number) => fs.readlink(id)),
    getxattr: wrap('getxattr', opMs, at, (id: number, name: string) => fs.getxattr(id, name)),
    listxattr: wrap('listxattr', opMs, at, (id: number) => fs.listxattr(id)),
    statfs: wrap('statfs', opMs, at, () => fs.statfs()),
    create: wrap('create', opMs, under, (parent: number, name: string) => fs.create(parent, name)),
    rmdir: wrap('rmdir', opMs, under, (parent: number, name: string) => fs.rmdir(parent, name)),
    // Refused, but answered here (not by the session) so that they are counted like the rest.
    mkdir: wrap('mkdir', opMs, under, (_parent: number, _name: string) => fs.mkdir()),
    unlink: wrap('unlink', opMs, under, (_parent: number, _name: string) => fs.unlink()),
  };
}

/** What the session calls when a handler threw something that is not an errno: a bug in the store, logged like the last-resort handler does. */
export function handlerErrorReporter({ log, metrics }: Telemetry): (err: unknown, op: OpName | number) => void {
  return (err, op) => {
    if (err instanceof FuseError) return; // an EIO the store chose (and logged)
    metrics.unexpectedErrors.inc({ kind: 'fuse_handler' });
    log.error({ op, err: err instanceof Error ? err.stack : String(err) }, 'BUG: a FUSE request failed unexpectedly; answered EIO, the store keeps serving');
  };
}

/** A store mounted by the process that serves it (no keeper). */
export interface InProcessMount {
  mountpoint: string;
  unmount(): Promise<void>;
}

/**
 * Mounts `fs` served by this process itself, without a keeper: for short-lived
 * private mounts such as `image optimize`'s recording store, which a restart
 * never outlives. `estargz-store mount` goes through the keeper instead.
 */
export async function mountInProcess(fs: StoreFs, mountpoint: string, opts: StoreOpOptions): Promise<InProcessMount> {
  const { log } = opts.telemetry;
  await checkFuseAvailable();
  await prepareMountpoint(mountpoint, log);
  const { FuseSession } = await import('../fuse/session.js');
  const session = await FuseSession.mount(storeOperations(fs, opts), { mountpoint, fsname: FS_NAME, subtype: FS_NAME, allowOther: true }, { readdirplus: true, onError: handlerErrorReporter(opts.telemetry) });
  let unmounted = false;
  return {
    mountpoint,
    unmount: async () => {
      if (unmounted) return;
      unmounted = true;
      await session.close();
      if (await mountAt(mountpoint)) await detach(mountpoint).catch((err: Error) => log.warn({ mountpoint, err: err.message }, 'unmount failed'));
    },
  };
}
