import { createHash, type Hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import type { Chunk } from '../src/estargz/layer-index.js';
import { cleanEntryName } from '../src/estargz/toc.js';
import { decodeZstdChunk, zerosChunk } from '../src/zstdchunked/chunk.js';
import { rebuildTar } from '../src/zstdchunked/tar-rebuild.js';
import type { TarSplitPosition } from '../src/zstdchunked/tar-split.js';
import { BACKGROUND_NICE, setThreadNice } from './thread-priority.js';

/**
 * The whole-layer check of background fetch, off the main thread: the blob's
 * sha256, and the sha256 of its uncompressed tar (the diffID). The main
 * thread sends the blob in order, each piece transferred; every piece is
 * acknowledged once it has been taken (the sender's backpressure), and `end`
 * is answered with both digests, or with why the tar could not be had.
 *
 * The tar is had in one of two ways, chosen by the worker's data:
 * - gzip (eStargz): the blob gunzipped;
 * - zstd:chunked (`ZstdRebuildPlan`): the blob is never decoded as a
 *   stream; the tar is rebuilt from the verified tar-split and each file's
 *   chunks, every frame decoded and checked against its chunk digest here,
 *   so the diff_id covers exactly the tree the store serves.
 */
/** A piece: a transferred ArrayBuffer, or a range of shared memory (read only, on both sides). */
export type ToDigest = { buf: ArrayBuffer | SharedArrayBuffer; offset?: number; length?: number } | { end: true };
export type FromDigest = { ack: true } | { blobDigest: string; diffID: string } | { blobDigest: string; error: string };

/** What the worker needs to rebuild a zstd:chunked layer's tar (its workerData). */
export interface ZstdRebuildPlan {
  kind: 'zstd:chunked';
  /** The compressed tar-split, verified at open against the manifest. */
  tarSplit: Uint8Array;
  tarSplitPosition: TarSplitPosition;
  /** Each regular file's chunks, by path (the index's byPath names). */
  files: Map<string, readonly Chunk[]>;
  /** Label for messages. */
  layer: string;
}

type Send = (m: FromDigest) => void;

function runGunzip(port: NonNullable<typeof parentPort>, send: Send): void {
  const blob = createHash('sha256');
  const diff = createHash('sha256');
  // 1 MiB outputs: a 100 MB layer is ~100 callbacks, not ~6,000 of zlib's default 16 KiB.
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  let failed: string | undefined;
  // Every piece is acknowledged exactly once: by its write callback, or, when gunzip fails
  // first (a callback zlib may then never call), by the error; the sender counts on it.
  const unacked = new Set<() => void>();
  gunzip.on('data', (d: Buffer) => diff.update(d));
  gunzip.on('error', (err) => {
    failed ??= `the layer does not gunzip: ${err.message}`;
    for (const ack of [...unacked]) ack();
  });
  port.on('message', (m: ToDigest) => {
    if ('buf' in m) {
      const b = pieceOf(m);
      blob.update(b);
      if (failed) return send({ ack: true });
      const ack = (): void => {
        if (unacked.delete(ack)) send({ ack: true });
      };
      unacked.add(ack);
      gunzip.write(b, ack);
      return;
    }
    const finish = (): void => result(send, blob, failed, diff);
    if (failed) finish();
    else {
      gunzip.once('end', finish);
      gunzip.once('error', finish);
      gunzip.end();
    }
  });
}

function pieceOf(m: { buf: ArrayBuffer | SharedArrayBuffer; offset?: number; length?: number }): Buffer {
  return Buffer.from(m.buf, m.offset ?? 0, m.length ?? m.buf.byteLength - (m.offset ?? 0));
}

function result(send: Send, blob: Hash, failed: string | undefined, diff: Hash): void {
  if (failed) send({ blobDigest: 'sha256:' + blob.digest('hex'), error: failed });
  else send({ blobDigest: 'sha256:' + blob.digest('hex'), diffID: 'sha256:' + diff.digest('hex') });
}

/**
 * The blob's pieces as they arrive, for the rebuild to take frames from in
 * blob order. Pieces the rebuild has gone past are dropped; a piece is
 * acknowledged once the rebuild is past it, or at once while the rebuild
 * waits for bytes not yet sent (so the sender is never held by a rebuild
 * that needs its next piece).
 */
class PieceQueue {
  private readonly pieces: { offset: number; data: Buffer; acked: boolean }[] = [];
  private received = 0;
  private ended = false;
  /** Blob offset before which nothing is kept. */
  private frontier = 0;
  private waiter: { end: number; wake: () => void } | undefined;
  private done = false;

  constructor(private readonly ack: () => void) {}

  push(data: Buffer): void {
    if (this.done) {
      // The rebuild is over: the rest of the blob (its manifest, tar-split, footer) is only hashed.
      this.received += data.length;
      this.ack();
      return;
    }
    this.pieces.push({ offset: this.received, data, acked: false });
    this.received += data.length;
    if (this.waiter && this.received >= this.waiter.end) this.waiter.wake();
    else if (this.waiter) this.ackAll();
  }

  end(): void {
    this.ended = true;
    this.waiter?.wake();
  }

  /** The rebuild is over (done or failed): everything held is let go. */
  finish(): void {
    this.done = true;
    this.ackAll();
    this.pieces.length = 0;
  }

  private ackAll(): void {
    for (const p of this.pieces) {
      if (!p.acked) {
        p.acked = true;
        this.ack();
      }
    }
  }

  /** Bytes [start, end) of the blob, once they arrived; what lies before `start` is dropped. */
  async range(start: number, end: number, what: string): Promise<Uint8Array> {
    if (start < this.frontier) throw new Error(`${what} is at blob offset ${start}, before a frame already taken (${this.frontier}): the tar-split's files are not in blob order`);
    this.frontier = start;
    while (this.pieces.length && this.pieces[0]!.offset + this.pieces[0]!.data.length <= start) {
      const p = this.pieces.shift()!;
      if (!p.acked) this.ack();
    }
    while (this.received < end) {
      if (this.ended) throw new Error(`${what} ends at blob offset ${end}, past the blob's ${this.received} bytes`);
      this.ackAll();
      await new Promise<void>((wake) => { this.waiter = { end, wake }; });
      this.waiter = undefined;
    }
    const first = this.pieces[0]!;
    if (start >= first.offset && end <= first.offset + first.data.length) return first.data.subarray(start - first.offset, end - first.offset);
    const out = Buffer.allocUnsafe(end - start);
    for (const p of this.pieces) {
      const from = Math.max(start, p.offset);
      const to = Math.min(end, p.offset + p.data.length);
      if (from < to) p.data.copy(out, from - start, from - p.offset, to - p.offset);
      if (p.offset >= end) break;
    }
    return out;
  }
}

function runZstdRebuild(port: NonNullable<typeof parentPort>, send: Send, plan: ZstdRebuildPlan): void {
  const blob = createHash('sha256');
  const diff = createHash('sha256');
  let failed: string | undefined;
  let rebuilt = false;
  const queue = new PieceQueue(() => send({ ack: true }));
  const contents = async function* (name: string): AsyncGenerator<Buffer> {
    const path = cleanEntryName(name);
    const chunks = plan.files.get(path);
    if (!chunks) throw new Error(`the tar-split has contents for ${JSON.stringify(name)}, which the manifest does not list as a regular file`);
    for (const c of chunks) {
      const ref = { path, fileOffset: c.fileOffset, innerOffset: c.innerOffset, size: c.size, digest: c.digest, blobOffset: c.blobOffset };
      if (c.codec === 'zeros') yield zerosChunk(ref);
      else yield decodeZstdChunk(await queue.range(c.blobOffset, c.blobEnd, `the chunk of ${JSON.stringify(path)} at file offset ${c.fileOffset}`), ref);
    }
  };
  const rebuild = (async () => {
    try {
      for await (const piece of rebuildTar(plan.tarSplit, plan.tarSplitPosition, contents)) diff.update(piece);
      rebuilt = true;
    } catch (err) {
      failed = `the layer tar could not be rebuilt from its tar-split and chunks: ${(err as Error).message}`;
    } finally {
      queue.finish();
    }
  })();
  port.on('message', (m: ToDigest) => {
    if ('buf' in m) {
      const b = pieceOf(m);
      blob.update(b);
      queue.push(b);
      return;
    }
    queue.end();
    void rebuild.then(() => {
      if (!rebuilt && !failed) failed = 'the layer tar rebuild stopped short';
      result(send, blob, failed, diff);
    });
  });
}

function run(port: NonNullable<typeof parentPort>): void {
  // Background work (hashing the whole blob; going back up is never needed): the main thread (FUSE) goes first.
  setThreadNice(BACKGROUND_NICE);
  const send: Send = (m) => port.postMessage(m);
  const plan = workerData as ZstdRebuildPlan | undefined;
  if (plan?.kind === 'zstd:chunked') runZstdRebuild(port, send, plan);
  else runGunzip(port, send);
}

if (parentPort) run(parentPort);
