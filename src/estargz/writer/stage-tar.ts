import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { EstargzError } from '../errors.js';
import { TarParser, type TarEntry } from '../tar/parser.js';

/** A plain tar on local disk, seekable, with the position of every entry. */
export interface StagedTar {
  path: string;
  entries: TarEntry[];
  /** Removes the spool file, if one was made. */
  cleanup(): Promise<void>;
}

export type TarInput = string | Readable;

/**
 * Makes the input layer seekable. A plain tar file is used where it is; a
 * gzip-compressed file or a stream is spooled (decompressed) to a temporary
 * file, so conversion memory does not grow with the layer. Entries are indexed
 * while the bytes go by.
 */
export async function stageTar(input: TarInput, tmpDir: string = tmpdir()): Promise<StagedTar> {
  if (typeof input === 'string' && !(await fileIsGzip(input))) {
    const entries = await indexStream(createReadStream(input), null);
    return { path: input, entries, cleanup: async () => {} };
  }
  const dir = await mkdtemp(join(tmpDir, 'estargz-stage-'));
  const path = join(dir, 'layer.tar');
  try {
    const stream = typeof input === 'string' ? createReadStream(input) : input;
    const entries = await indexStream(stream, path);
    return { path, entries, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
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
  const gunzip = createGunzip();
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

/** Indexes the tar entries of `stream`, copying the (decompressed) bytes to `spoolPath` when given. */
async function indexStream(stream: Readable, spoolPath: string | null): Promise<TarEntry[]> {
  const parser = new TarParser();
  const entries: TarEntry[] = [];
  const spool = spoolPath ? await open(spoolPath, 'w') : null;
  try {
    for await (const chunk of spoolPath ? maybeGunzip(stream) : (stream as AsyncIterable<Buffer>)) {
      if (!parser.done) for (const e of parser.push(chunk)) entries.push(e);
      if (spool) await spool.write(chunk);
    }
    parser.end();
  } finally {
    await spool?.close();
  }
  return entries;
}
