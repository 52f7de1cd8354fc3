import { createHash } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { encodeFooter } from '../footer.js';
import { headerCodec } from '../tar/header-codec.js';
import { paddedSize } from '../tar/parser.js';
import { TOC_TAR_NAME } from '../toc.js';
import { DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION_LEVEL } from './defaults.js';
import { FileWindow } from './file-window.js';
import { TocBuilder, layoutMembers, type MemberPlan } from './layout.js';
import { MemberCompressor } from './member-compressor.js';
import { orderEntries } from './order.js';
import { OrderedOutput } from './ordered-output.js';
import { stageTar, type TarInput } from './stage-tar.js';
import { StreamHasher } from './stream-hasher.js';
import { tocJson } from './toc-json.js';

export { DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION_LEVEL };

export interface ConvertOptions {
  /** Largest uncompressed chunk of a regular file per gzip member. */
  chunkSize?: number;
  /** Files to put first (prefetched on start); names as in the tar. */
  prioritizedFiles?: readonly string[];
  /** gzip level 0–9. */
  level?: number;
  /** Where a compressed or streamed input is spooled, and segments that finish early wait. */
  tmpDir?: string;
  /** Members compressed at once (default: one per core, up to 4). The output does not depend on it. */
  concurrency?: number;
  /** Called as the conversion moves (often: throttle before drawing). */
  onProgress?: (progress: Readonly<ConvertProgress>) => void;
}

export interface ConvertProgress {
  /** Uncompressed tar bytes indexed (and spooled, for a compressed or streamed input). */
  staged: number;
  /** Size of the uncompressed tar, once staged. */
  tarBytes: number | null;
  /** Uncompressed bytes compressed so far (the layout's: tar headers, payloads, padding). */
  read: number;
  /** Blob bytes written to the output. */
  written: number;
}

export interface ConvertResult {
  /** sha256 of the blob (the OCI layer digest). */
  digest: string;
  size: number;
  /** sha256 of the whole uncompressed stream, TOC entry included. */
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
  /** Prioritized names that the layer does not contain. */
  missedPrioritized: string[];
}

const ZERO_BLOCKS = Buffer.alloc(1024);
/** Uncompressed bytes per segment: a worker's unit of work (whole members, so at least one). */
const SEGMENT_BYTES = 4 << 20;

/** Runs `fn` one call at a time, in call order. */
function serialized<T>(fn: () => Promise<T>): () => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return () => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => {}); // the caller gets run's failure; the next call runs after it either way
    return run;
  };
}

/**
 * Converts a layer tar (plain or gzip, file or stream) to eStargz, written to
 * `output`: a gzip member starts at every regular file's payload and every
 * chunk, the TOC is the last entry, then the 51-byte footer. Each entry's tar
 * header bytes are copied verbatim, so extracting the blob yields the input
 * entries exactly (plus the landmark and `stargz.index.json`).
 *
 * Memory does not grow with the layer or its files: the input is staged on
 * disk (see stageTar), members are laid out without reading payloads, and
 * `concurrency` workers each compress a segment of consecutive members with
 * one reused zlib stream, reading the staged tar through a small buffer;
 * segments that finish ahead of their turn wait in spill files. What stays
 * in memory is the tar index and the TOC entries, as in the reference.
 */
export async function convertLayer(input: TarInput, output: Writable, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const level = opts.level ?? DEFAULT_COMPRESSION_LEVEL;
  const concurrency = opts.concurrency ?? defaultConcurrency();
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`chunk size must be a positive integer, got ${chunkSize}`);
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new RangeError(`compression level must be 0–9, got ${level}`);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);

  const progress: ConvertProgress = { staged: 0, tarBytes: null, read: 0, written: 0 };
  const report = opts.onProgress ? () => opts.onProgress!(progress) : () => {};
  const staged = await stageTar(input, opts.tmpDir, (n) => { progress.staged = n; report(); });
  progress.tarBytes = staged.size;
  const fh = await open(staged.path, 'r');
  const spillDir = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'estargz-spill-'));
  const out = new OrderedOutput(output, spillDir, (n) => { progress.written = n; report(); });
  const compressors: MemberCompressor[] = [];
  try {
    const ordering = orderEntries(staged.takeEntries(), opts.prioritizedFiles ?? []);
    const toc = new TocBuilder();
    const members = layoutMembers(ordering, toc, chunkSize);
    const hasher = new StreamHasher(new FileWindow(fh));
    /** Compressed size of each member, by index. */
    const memberSizes: number[] = [];
    const newCompressor = (): MemberCompressor => {
      const c = new MemberCompressor(level, new FileWindow(fh), (n) => { progress.read += n; report(); });
      compressors.push(c);
      return c;
    };

    let segments = 0;
    let failed = false;
    // Segments are cut (and hashed, in stream order) as workers ask for them.
    const nextSegment = serialized(async (): Promise<{ index: number; members: MemberPlan[] } | null> => {
      const list: MemberPlan[] = [];
      for (let bytes = 0; bytes < SEGMENT_BYTES && !failed;) {
        const r = members.next();
        if (r.done) break;
        await hasher.member(r.value);
        list.push(r.value);
        bytes += r.value.size;
      }
      return list.length && !failed ? { index: segments++, members: list } : null;
    });
    const worker = async (): Promise<void> => {
      const compressor = newCompressor();
      for (let seg = await nextSegment(); seg; seg = await nextSegment()) {
        // Bounds the spill files: a worker does not run more than a few segments ahead of the output.
        await out.waitTurn(seg.index, 2 * concurrency);
        if (failed) return;
        const sink = out.open(seg.index);
        for (const m of seg.members) memberSizes[m.index] = await compressor.compress(m, sink);
        await out.finish(seg.index);
      }
    };
    const settled = await Promise.allSettled(Array.from({ length: concurrency }, () => worker().catch((err) => {
      failed = true;
      out.releaseWaiters(); // a worker waiting for the failed one's segment would wait forever
      throw err;
    })));
    const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (rejected) throw rejected.reason;

    const offsets = new Array<number>(memberSizes.length);
    for (let i = 0, at = 0; i < memberSizes.length; i++) {
      offsets[i] = at;
      at += memberSizes[i]!;
    }
    toc.resolveOffsets((i) => offsets[i]!);

    // The TOC's own member: its tar header, the JSON (streamed), padding, then the end-of-archive blocks.
    const json = tocJson(toc.entries);
    const tocHash = createHash('sha256');
    const tocOffset = out.size;
    const tocCompressor = compressors[0] ?? newCompressor();
    await tocCompressor.run(out.open(segments), json.size + 2048, async (push) => {
      const feed = async (bytes: Buffer): Promise<void> => {
        hasher.update(bytes);
        await push(bytes);
      };
      await feed(headerCodec.encode({ name: TOC_TAR_NAME, mode: 0, uid: 0, gid: 0, size: json.size, mtime: new Date(0), type: 'file' })!);
      for (const piece of json.pieces()) {
        tocHash.update(piece);
        await feed(piece);
      }
      await feed(Buffer.alloc(paddedSize(json.size) - json.size));
      await feed(ZERO_BLOCKS);
    });
    await out.writeRaw(encodeFooter(tocOffset));

    return {
      digest: out.digest(),
      size: out.size,
      diffID: hasher.diffID(),
      tocDigest: 'sha256:' + tocHash.digest('hex'),
      uncompressedSize: hasher.size,
      missedPrioritized: ordering.missed,
    };
  } finally {
    // Each step on its own: a failure in one must not leave the temporary files of the next behind.
    await out.abandon().catch(() => {});
    await fh.close().catch(() => {});
    await rm(spillDir, { recursive: true, force: true });
    await staged.cleanup();
  }
}

/** One worker per core, up to 4: compression is CPU-bound and runs on libuv's 4 threads. */
function defaultConcurrency(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}
