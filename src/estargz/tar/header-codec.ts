import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * tar-stream's 512-byte header codec (ustar, GNU and v7 layouts, base-256
 * numbers, checksums). The package's export map exposes only its streaming
 * API, so the codec file is loaded from the resolved package directory.
 */
export interface DecodedHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Date;
  type: string | null;
  linkname: string | null;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

export interface EncodeHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Date;
  type: 'file' | 'directory';
  linkname?: string;
  uname?: string;
  gname?: string;
}

interface HeaderCodec {
  /** Returns null for an all-zero block; throws on a bad checksum. */
  decode(block: Buffer, filenameEncoding: string, allowUnknownFormat: boolean): DecodedHeader | null;
  /** Returns null when the header does not fit ustar (long or non-ASCII name). */
  encode(header: EncodeHeader): Buffer | null;
}

const require = createRequire(import.meta.url);
export const headerCodec: HeaderCodec = require(join(dirname(require.resolve('tar-stream')), 'headers.js')) as HeaderCodec;
