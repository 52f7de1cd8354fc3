/**
 * mount(2) and umount2(2) of a FUSE connection, done by the process itself
 * (as root) rather than by fusermount3, so the process owns the /dev/fuse fd
 * from the start and can hand it on.
 */
import { closeSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import type { FuseAddon } from './native.js';

export interface MountParams {
  mountpoint: string;
  /** The "device" column of /proc/mounts. */
  fsname?: string;
  /** The type becomes fuse.<subtype>. */
  subtype?: string;
  /** Other users (containers/storage, containers) may see the mount. Default true. */
  allowOther?: boolean;
  /** The kernel checks modes itself (no ACCESS requests, modes bind). Default true. */
  defaultPermissions?: boolean;
  /**
   * Mount read-only (MS_RDONLY): the kernel then also stops invalidating
   * atime after every read and listing, which otherwise costs one GETATTR
   * per file re-read. Write-like calls then fail in the VFS without reaching
   * the filesystem (so rmdir/create cannot carry meaning). Default false.
   */
  readOnly?: boolean;
  /** Honour setuid bits and device nodes (default false: nosuid,nodev, as libfuse mounts). */
  suid?: boolean;
  dev?: boolean;
}

const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;

/** Opens /dev/fuse and mounts it on `p.mountpoint`; returns the connection's fd. */
export function mountConnection(addon: FuseAddon, p: MountParams): number {
  const fd = addon.openDevice();
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const opts = [`fd=${fd}`, 'rootmode=40000', `user_id=${uid}`, `group_id=${gid}`];
  if (p.allowOther ?? true) opts.push('allow_other');
  if (p.defaultPermissions ?? true) opts.push('default_permissions');
  const flags = (p.readOnly ? MS_RDONLY : 0) | (p.suid ? 0 : MS_NOSUID) | (p.dev ? 0 : MS_NODEV);
  const subtype = p.subtype ?? 'estargz-store';
  try {
    addon.mount(p.fsname ?? 'estargz-store', p.mountpoint, `fuse.${subtype}`, flags, opts.join(','));
  } catch (err) {
    closeSync(fd);
    const e = err as Error & { errno?: number };
    if (e.errno === constants.errno.EPERM) {
      throw new Error(`mounting ${p.mountpoint} needs root (CAP_SYS_ADMIN): this binding calls mount(2) itself; unprivileged mounts through fusermount3 are not supported yet`);
    }
    throw new Error(`mount of ${p.mountpoint} failed: ${e.message}`);
  }
  return fd;
}

/** Unmounts; a busy mount is detached instead (it goes when its last user does). */
export function unmountConnection(addon: FuseAddon, mountpoint: string): void {
  const rc = addon.umount(mountpoint, 0);
  if (rc === constants.errno.EBUSY) addon.umount(mountpoint, MNT_DETACH);
}

/**
 * Raises the mount's read-ahead window (its backing device's read_ahead_kb)
 * to `bytes`. The kernel offers only its default (128 KiB) in INIT and keeps
 * the smaller of that and our answer, so without this a sequential read
 * arrives as 128 KiB requests instead of up to max_pages (1 MiB). Best effort:
 * returns false if the mount or the sysfs file is not there.
 */
export async function raiseReadahead(mountpoint: string, bytes: number): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  // Fields: id parent major:minor root mountpoint …; the newest mount on a path is listed last.
  const line = info.split('\n').filter((l) => unescapeMountPath(l.split(' ')[4] ?? '') === mountpoint).pop();
  const dev = line?.split(' ')[2];
  if (!dev) return false;
  return writeFile(`/sys/class/bdi/${dev}/read_ahead_kb`, String(Math.floor(bytes / 1024))).then(() => true, () => false);
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}
