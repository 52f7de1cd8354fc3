import type { Logger } from '../log/logger.js';
import { isLayerError } from '../layers/errors.js';
import { BadNameError } from './names.js';

/** Linux errno values, negated as FUSE answers them. */
export const Errno = {
  EPERM: -1, ENOENT: -2, EIO: -5, EBADF: -9, EACCES: -13, ENOTDIR: -20, EISDIR: -21, EINVAL: -22, EROFS: -30, ENODATA: -61, ETIMEDOUT: -110, ESTALE: -116,
} as const;

const NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${-errno}`;
}

/** A FUSE answer that is not a failure worth logging (ENOENT for an unknown name, EROFS for a write). */
export class FsAnswer extends Error {
  constructor(readonly errno: number, message = '') {
    super(message);
  }
}

export const notFound = (): FsAnswer => new FsAnswer(Errno.ENOENT);
export const readOnly = (): FsAnswer => new FsAnswer(Errno.EROFS);

/**
 * The one place errors become errno: unknown names ENOENT, malformed names
 * EINVAL, anything that went wrong fetching, verifying or resolving EIO (so
 * that containers/storage falls back to a normal pull), with a log line
 * naming the path and the cause. Registry, format and engine failures all
 * arrive as LayerError (src/layers wraps them), so this room needs to know
 * none of those rooms' error types.
 */
export function toErrno(err: unknown, op: string, path: string, log: Logger): number {
  if (err instanceof FsAnswer) return err.errno;
  if (err instanceof BadNameError) {
    log.debug({ op, path, err: err.message }, 'bad store path');
    return Errno.EINVAL;
  }
  if (isLayerError(err)) {
    // A resolution failure was logged where it happened (once per resolution, not per lookup).
    if (err.stage === 'resolution') log.debug({ op, path, ref: err.ref, digest: err.digest, code: err.code, err: err.message }, 'lookup of a layer that is not served');
    else log.error({ op, path, ref: err.ref, digest: err.digest, source: err.source, code: err.code, err: err.message }, 'FUSE request failed');
    return Errno.EIO;
  }
  log.error({ op, path, err: (err as Error)?.stack ?? String(err) }, 'FUSE request failed unexpectedly');
  return Errno.EIO;
}
