import { gzipSync } from 'node:zlib';
import { encodeFooter } from '../footer.js';
import { headerCodec } from '../tar/header-codec.js';
import { paddedSize } from '../tar/parser.js';
import { TOC_TAR_NAME, serializeToc, type TocEntryJson } from '../toc.js';

/**
 * An eStargz blob whose payload is zeros: a valid footer and TOC member over
 * `entries`, with no file data behind them. Opening it runs the whole open
 * path (tail read, TOC inflate, digest, parse, index) without any I/O, which
 * is what a start-up warm-up needs; reading a file's data from it fails
 * verification, as it should. Chunk offsets in `entries` must be below
 * `payloadBytes`.
 */
export function tocOnlyBlob(entries: TocEntryJson[], payloadBytes: number): Buffer {
  const json = serializeToc({ version: 1, entries });
  const header = headerCodec.encode({ name: TOC_TAR_NAME, mode: 0, uid: 0, gid: 0, size: json.length, mtime: new Date(0), type: 'file' })!;
  const tar = Buffer.concat([header, json, Buffer.alloc(paddedSize(json.length) - json.length), Buffer.alloc(1024)]);
  return Buffer.concat([Buffer.alloc(payloadBytes), gzipSync(tar), encodeFooter(payloadBytes)]);
}
