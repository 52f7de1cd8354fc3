/**
 * Errors of the registry client. Messages name the registry host, the
 * operation and the repository or digest, never a credential: URLs are
 * reported without their query string (pre-signed redirect URLs carry
 * signatures there).
 */
export type RegistryErrorCode =
  | 'BAD_REFERENCE'
  | 'BAD_CONFIG'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'NOT_FOUND'
  | 'HTTP_STATUS'
  | 'NETWORK'
  | 'TIMEOUT'
  | 'DIGEST_MISMATCH'
  | 'PROTOCOL'
  | 'UNSUPPORTED';

export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isRegistryError(err: unknown, code?: RegistryErrorCode): err is RegistryError {
  return err instanceof RegistryError && (code === undefined || err.code === code);
}

/** A URL for messages and logs: scheme, host and path only. */
export function safeUrl(url: string | URL): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}
