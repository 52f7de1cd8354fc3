import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { EstargzError } from '../errors.js';
import { TarParser, type TarEntry } from '../tar/parser.js';
import { FileWindow } from './file-window.js';

/** A plain tar on local disk, seekable, with the position of every entry. */
export interface StagedTar {
  path: string;
  /** Bytes of the tar file. */
  size: number;
  /** The entry index; handed over once (the caller keeps it only as long as it needs it). */
  takeEntries(): TarEntry[];
  /** Removes the spool file, if one was made. */
  cleanup(): Promise<void>;
}

export type TarInput = string | Readable;

const BLOCK = 512;
/** Stands in for payload bytes the index walk skips: the parser counts them and looks at none. */
const SKIPPED = Buffer.alloc(64 << 10);

/**
 * Makes the input layer seekable. A plain tar file is used where it is; a
 * gzip-compressed file or a stream is spooled (decompressed) to a temporary
 * file, so conversion memory does not grow with the layer. The tar is then
 * indexed by reading its header blocks only: payloads are skipped, not read.
 * `onProgress` gets the bytes staged so far.
 */
export async function stageTar(input: TarInput, tmpDir: string = tmpdir(), onProgress?: (bytes: number) => void): Promise<StagedTar> {
  if (typeof input === 'string' && !(await fileIsGzip(input))) {
    return staged(input, await indexFile(input, onProgress), async () => {});
  }
  const dir = await mkdtemp(join(tmpDir, 'estargz-stage-'));
  const path = join(dir, 'layer.tar');
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    await spool(typeof input === 'string' ? createReadStream(input) : input, path, onProgress);
    return staged(path, await indexFile(path), cleanup);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function staged(path: string, index: { entries: TarEntry[]; size: number }, cleanup: () => Promise<void>): StagedTar {
  let entries: TarEntry[] | null = index.entries;
  return {
    path,
    size: index.size,
    takeEntries: () => {
      const taken = entries ?? [];
      entries = null;
      return taken;
    },
    cleanup,
  };
}

async function fileIsGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const magic = Buffer.alloc(2);
    const { bytesRead } = await fh.read(magic, 0, 2, 0);
    return bytesRead === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/** Yields the stream's bytes, gunzipped when they start with the gzip magic. */
async function* maybeGunzip(stream: Readable): AsyncGenerator<Buffer> {
  const it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 2) {
    const r = await it.next();
    if (r.done) { ended = true; break; }
    head = Buffer.concat([head, r.value]);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length) yield head;
    if (ended) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  if (!(head[0] === 0x1f && head[1] === 0x8b)) {
    yield* rest();
    return;
  }
  const gunzip = createGunzip({ chunkSize: 64 << 10 });
  const piped = pipeline(Readable.from(rest()), gunzip).catch((err: Error) => {
    throw new EstargzError('INVALID_TAR', `input layer is not a valid gzip stream: ${err.message}`);
  });
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (err) {
    await piped;
    throw err;
  }
  await piped;
}

/** Copies the (decompressed) bytes of `stream` to `path`. */
async function spool(stream: Readable, path: string, onProgress?: (bytes: number) => void): Promise<void> {
  const file = await open(path, 'w');
  let bytes = 0;
  try {
    for await (const chunk of maybeGunzip(stream)) {
      await file.write(chunk);
      bytes += chunk.length;
      onProgress?.(bytes);
    }
  } finally {
    await file.close();
  }
}

/**
 * Indexes the tar at `path`, block by block through a reused window. After
 * each entry the parser is given stand-in bytes for the payload instead of
 * the payload, so a layer of large files costs a few reads. Header blocks go
 * to the parser as copies: it may keep a block that arrives in pieces.
 */
async function indexFile(path: string, onProgress?: (bytes: number) => void): Promise<{ entries: TarEntry[]; size: number }> {
  const size = (await stat(path)).size;
  const fh = await open(path, 'r');
  try {
    const window = new FileWindow(fh);
    const parser = new TarParser();
    const entries: TarEntry[] = [];
    let pos = 0;
    while (pos < size && !parser.done) {
      const n = Math.min(BLOCK, size - pos);
      const block = Buffer.allocUnsafe(n);
      let at = 0;
      await window.forEach(pos, n, (piece) => { at += piece.copy(block, at); });
      pos += n;
      for (const e of parser.push(block)) {
        entries.push(e);
        // The parser now skips the payload and its padding: count it through without reading it.
        for (let skip = Math.min(e.endOffset, size) - pos; skip > 0; skip -= SKIPPED.length) {
          const len = Math.min(skip, SKIPPED.length);
          parser.push(SKIPPED.subarray(0, len));
          pos += len;
        }
      }
      onProgress?.(pos);
    }
    parser.end();
    onProgress?.(size); // what follows the end-of-archive marker is staged too, just not read
    return { entries, size };
  } finally {
    await fh.close();
  }
}
