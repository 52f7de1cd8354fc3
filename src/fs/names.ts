import { parseStoreReference, type ImageReference } from '../layers/names.js';

/** Why a store path component was refused: maps to EINVAL. */
export class BadNameError extends Error {}

const STD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Decodes a `<base64(image ref)>` directory name (standard alphabet, padded), as containers/storage writes it. */
export function decodeRefDir(name: string): ImageReference {
  if (name === '' || !STD_BASE64.test(name)) throw new BadNameError(`${JSON.stringify(name)} is not standard base64`);
  const text = Buffer.from(name, 'base64').toString('utf8');
  // Strict: containers/storage encodes the reference exactly, so whitespace or control characters
  // (a trailing newline, say) mean a name that is not one; the reference parser alone would trim them away.
  if (/[\s\p{Cc}\uFFFD]/u.test(text)) throw new BadNameError(`${JSON.stringify(name)} decodes to ${JSON.stringify(text)}, which has whitespace, control or invalid UTF-8 characters`);
  try {
    return parseStoreReference(text);
  } catch (err) {
    throw new BadNameError((err as Error).message);
  }
}

export function encodeRefDir(ref: string): string {
  return Buffer.from(ref, 'utf8').toString('base64');
}

/** Checks a `<digest>` directory name. */
export function checkDigestDir(name: string): string {
  if (!DIGEST.test(name)) throw new BadNameError(`${JSON.stringify(name)} is not a sha256 digest`);
  return name;
}
