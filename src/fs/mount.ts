import { execFile } from 'node:child_process';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type FuseType from 'fuse-native';
import { logger } from '../log/logger.js';
import type { ActivityClock } from '../engine/activity.js';
import { fuseOpDuration, fuseOpErrors } from '../metrics/registry.js';
import { Errno, errnoName, readOnly, toErrno } from './errno.js';
import type { StoreFs } from './store-fs.js';

const run = promisify(execFile);

export const FS_NAME = 'estargz-store';

export interface MountOptions {
  mountpoint: string;
  /** Let other users (and containers/storage running as another user) see the mount. */
  allowOther?: boolean;
  /** Seconds the kernel may cache names and attributes: layer content never changes. */
  entryTimeoutSec?: number;
  attrTimeoutSec?: number;
  /** Longest a read may take before the kernel gets ETIMEDOUT: slow but progressing reads must not be cut. */
  readTimeoutMs?: number;
  /** Longest any other request may take (lookups resolve layers: bounded by the resolver's own timeout). */
  opTimeoutMs?: number;
  debug?: boolean;
  /** Noted on every request, so that background work (disk-cache writes) waits for a quiet moment. */
  activity?: ActivityClock;
}

/**
 * Loads fuse-native when a mount is made, not when the CLI starts: its
 * prebuilt addon needs libfuse2, which the other commands do not.
 */
async function loadFuse(): Promise<typeof FuseType> {
  try {
    return (await import('fuse-native')).default;
  } catch (err) {
    throw new Error(`cannot load the FUSE library (${(err as Error).message.split('\n')[0]}): install the Debian packages libfuse2 and fuse3 (apt-get install libfuse2 fuse3)`);
  }
}

/** fuse-native with two libfuse options it does not expose: real inode numbers (hardlinks share one) and a larger read-ahead. */
function storeFuseClass(Fuse: typeof FuseType): typeof FuseType {
  return class StoreFuse extends Fuse {
    protected override _fuseOptions(): string {
      const base = super._fuseOptions();
      const extra = 'use_ino,max_readahead=1048576';
      return base ? `${base},${extra}` : `-o${extra}`;
    }
  };
}

/** Finds a mount at `path` in /proc/self/mountinfo: its filesystem type, or undefined. */
async function mountAt(path: string): Promise<string | undefined> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    const mountPoint = fields[4]?.replace(/\\040/g, ' ');
    if (mountPoint === path && dash > 0) return fields[dash + 1];
  }
  return undefined;
}

/**
 * Whether the mount at `path` still answers (a killed store leaves "Transport
 * endpoint is not connected"). A name that does not exist is probed: the
 * mount root's own attributes may come from the kernel's cache.
 */
export async function mountAnswers(path: string): Promise<boolean> {
  const probe = stat(join(path, `.estargz-store-probe-${process.pid}`)).then(() => true, (err: NodeJS.ErrnoException) => err.code !== 'ENOTCONN' && err.code !== 'EIO');
  const timeout = new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref());
  return Promise.race([probe, timeout]);
}

/**
 * Makes the mountpoint usable: a stale mount left by a killed store is
 * unmounted; a mountpoint that a live store (or anything else) serves is
 * refused with a message.
 */
export async function prepareMountpoint(mountpoint: string): Promise<void> {
  const fstype = await mountAt(mountpoint);
  if (fstype !== undefined) {
    if (await mountAnswers(mountpoint)) {
      throw new Error(`${mountpoint} is already mounted (${fstype}) and answering: another store is serving it; stop it first`);
    }
    logger.warn({ mountpoint, fstype }, 'cleaning a stale mount left by a store that did not unmount');
    await run('fusermount', ['-uz', mountpoint]).catch(async () => run('umount', ['-l', mountpoint]));
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
  try {
    await run('fusermount', ['-V']);
  } catch {
    throw new Error('fusermount is missing: install the Debian package fuse3 (apt-get install fuse3 libfuse2)');
  }
}

type Handler = (...args: any[]) => void;

/** Adapts an async operation to fuse-native's callback, timing it and mapping errors to errno in one place. */
function timedOp(activity: ActivityClock | undefined, name: string, fn: (...args: any[]) => Promise<unknown>, reply: (cb: Handler, value: any) => void): Handler {
  return (...args: any[]) => {
    const cb = args.pop() as Handler;
    const started = performance.now();
    activity?.note();
    fn(...args).then(
      (value) => {
        fuseOpDuration.observe({ op: name }, (performance.now() - started) / 1000);
        reply(cb, value);
      },
      (err: unknown) => {
        fuseOpDuration.observe({ op: name }, (performance.now() - started) / 1000);
        const errno = toErrno(err, name, String(args[0]));
        if (errno !== Errno.ENOENT) fuseOpErrors.inc({ op: name, errno: errnoName(errno) });
        cb(errno);
      },
    );
  };
}

const rofs = async (): Promise<never> => { throw readOnly(); };

function operations(fs: StoreFs, activity: ActivityClock | undefined): Record<string, Handler> {
  const op = (name: string, fn: (...args: any[]) => Promise<unknown>, reply: (cb: Handler, value: any) => void): Handler => timedOp(activity, name, fn, reply);
  const ok = (cb: Handler) => cb(0);
  const value = (cb: Handler, v: unknown) => cb(0, v);
  return {
    init: (cb: Handler) => cb(0),
    getattr: op('getattr', (path: string) => fs.getattr(path), value),
    readdir: op('readdir', (path: string) => fs.readdir(path), (cb, r: { names: string[]; stats?: unknown[] }) => cb(0, r.names, r.stats)),
    readlink: op('readlink', (path: string) => fs.readlink(path), value),
    // No open, release, opendir or releasedir: libfuse answers those itself, which saves a
    // round trip through the JS thread per file and directory (see StoreFs.read).
    read: op('read', (path: string, _fd: number, buf: Buffer, len: number, pos: number) => fs.read(path, buf, len, pos), (cb, n: number) => cb(n)),
    getxattr: op('getxattr', (path: string, name: string) => fs.getxattr(path, name), value),
    listxattr: op('listxattr', (path: string) => fs.listxattr(path), value),
    create: op('create', (path: string) => fs.create(path), value),
    rmdir: op('rmdir', (path: string) => fs.rmdir(path), ok),
    statfs: op('statfs', async () => ({ bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }), value),
    access: op('access', async (_path: string, mode: number) => { if (mode & 2) throw readOnly(); }, ok),
    // Everything that would change the store is refused: it is read-only.
    write: op('write', rofs, ok), truncate: op('truncate', rofs, ok), ftruncate: op('ftruncate', rofs, ok),
    mkdir: op('mkdir', rofs, ok), unlink: op('unlink', rofs, ok), rename: op('rename', rofs, ok),
    link: op('link', rofs, ok), symlink: op('symlink', rofs, ok), chmod: op('chmod', rofs, ok),
    chown: op('chown', rofs, ok), utimens: op('utimens', rofs, ok), mknod: op('mknod', rofs, ok),
    setxattr: op('setxattr', rofs, ok), removexattr: op('removexattr', rofs, ok),
  };
}

export interface MountedStore {
  mountpoint: string;
  unmount(): Promise<void>;
}

/** Mounts the store and returns once the kernel has the mount. */
export async function mountStore(fs: StoreFs, opts: MountOptions): Promise<MountedStore> {
  const mountpoint = resolve(opts.mountpoint);
  await checkFuseAvailable();
  const StoreFuse = storeFuseClass(await loadFuse());
  await prepareMountpoint(mountpoint);
  const fuse = new StoreFuse(mountpoint, operations(fs, opts.activity), {
    allowOther: opts.allowOther ?? true,
    fsname: FS_NAME,
    kernelCache: true,
    entryTimeout: opts.entryTimeoutSec ?? 60,
    attrTimeout: opts.attrTimeoutSec ?? 60,
    debug: opts.debug ?? false,
    timeout: { default: opts.opTimeoutMs ?? 60_000, read: opts.readTimeoutMs ?? 300_000 },
  });
  await new Promise<void>((res, rej) => fuse.mount((err) => (err ? rej(err) : res())));
  logger.info({ mountpoint }, 'store mounted');
  let unmounted = false;
  return {
    mountpoint,
    unmount: async () => {
      if (unmounted) return;
      unmounted = true;
      await new Promise<void>((res) => fuse.unmount((err) => {
        if (err) logger.warn({ mountpoint, err: err.message }, 'unmount failed; it is lazily detached instead');
        res();
      }));
      if (await mountAt(mountpoint)) await run('fusermount', ['-uz', mountpoint]).catch(() => {});
      logger.info({ mountpoint }, 'store unmounted');
    },
  };
}
