/**
 * Errors the engine raises for its own conditions (as opposed to the format's
 * and the registry's, which pass through with their context). Each names the
 * layer and, where one is concerned, the file and offset.
 */
export type EngineErrorCode =
  /** A cached chunk does not have the size the TOC gives it: the TOC lies about that digest. */
  | 'CHUNK_SIZE_MISMATCH'
  /** The verified chunks of a read do not add up to the bytes the file's size promises. */
  | 'SHORT_READ'
  /** A chunk kept failing verification (or its fetch kept failing) after every retry. */
  | 'RETRIES_EXHAUSTED'
  /** The layer was closed while work on it was in progress. */
  | 'CLOSED';

export interface EngineErrorContext {
  layer?: string;
  path?: string;
  fileOffset?: number;
  blobOffset?: number;
}

export class EngineError extends Error {
  override readonly name = 'EngineError';
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly context: EngineErrorContext = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError;
}
