import { EstargzError } from '../errors.js';

/** The one error every index step raises: the TOC contradicts itself or a limit. */
export function invalid(message: string, path?: string): EstargzError {
  return new EstargzError('INVALID_TOC', message, path === undefined ? {} : { path });
}

/** An INVALID_TOC error that names the entry at `path`, as every per-entry check does. */
export function invalidEntry(path: string, problem: string): EstargzError {
  return invalid(`TOC entry ${JSON.stringify(path)}: ${problem}`, path);
}
