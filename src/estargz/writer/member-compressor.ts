import { promisify } from 'node:util';
import { createGzip, gzip, type Gzip } from 'node:zlib';
import { FileWindow } from './file-window.js';
import type { MemberPlan } from './layout.js';

/** Takes one member's compressed output, in order. */
export interface CompressedSink {
  write(bytes: Buffer): void;
  /** Resolves once the sink has room for more. */
  ready(): Promise<void>;
}

const BATCH_BYTES = 128 << 10;
const BATCHES = 3;
const ZEROS = Buffer.alloc(BATCH_BYTES);
const gzipAsync = promisify(gzip);

/**
 * Compresses members one after another, each into the same gzip member a
 * fresh `zlib.gzip(bytes, {level})` makes, without holding the member:
 * input is copied from the staged tar into a few reused batch buffers and
 * streamed through a zlib stream, so memory stays at a few hundred KiB
 * whatever the member size; compression runs on libuv's thread pool.
 *
 * Each member gets a new zlib stream: Node's zlib (Chromium's) can read
 * bytes past the end of the input when it searches a match near the end, so
 * a stream reset() between members, which keeps the old window, changes the
 * output. The output buffer is sized to the member, so a small member's
 * comes from Node's shared pool rather than a fresh allocation.
 *
 * Level 0 is the other exception: zlib cuts stored blocks where its input
 * and output buffers end, so streaming would change the bytes. There a
 * member is gathered whole (up to the chunk size plus headers) and
 * compressed in one call, as it always was.
 */
export class MemberCompressor {
  private readonly window: FileWindow;
  private readonly batches = Array.from({ length: BATCHES }, () => Buffer.allocUnsafe(BATCH_BYTES));
  /** Write of each batch still being compressed. */
  private readonly inFlight: (Promise<void> | null)[] = new Array<Promise<void> | null>(BATCHES).fill(null);
  private current = 0;
  private filled = 0;
  private gzip: Gzip | null = null;
  private sink: CompressedSink | null = null;
  private memberBytes = 0;
  private failure: Error | null = null;

  constructor(private readonly level: number, source: FileWindow, private readonly onInput?: (bytes: number) => void) {
    this.window = source;
  }

  /** Compresses `member` into `sink`; returns its compressed size. */
  compress(member: MemberPlan, sink: CompressedSink): Promise<number> {
    return this.run(sink, member.size, async (push) => {
      for (const part of member.parts) {
        if (part.kind === 'bytes') await push(part.bytes);
        else if (part.kind === 'zero') {
          for (let left = part.length; left > 0; left -= ZEROS.length) await push(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
        } else {
          await this.window.forEach(part.offset, part.length, push);
        }
      }
    });
  }

  /** Compresses what `feed` pushes (about `sizeHint` bytes) as one gzip member into `sink`; returns its compressed size. */
  async run(sink: CompressedSink, sizeHint: number, feed: (push: (bytes: Buffer) => Promise<void>) => Promise<void>): Promise<number> {
    if (this.level === 0) return this.runWhole(sink, feed);
    const gzip = createGzip({ level: this.level, chunkSize: outputChunk(sizeHint) });
    this.gzip = gzip;
    this.sink = sink;
    this.memberBytes = 0;
    this.failure = null;
    gzip.on('data', (chunk: Buffer) => {
      this.memberBytes += chunk.length;
      sink.write(chunk);
    });
    const ended = new Promise<void>((resolve, reject) => {
      gzip.once('end', resolve);
      gzip.once('error', (err) => { this.failure = err; reject(err); });
    });
    ended.catch(() => {}); // awaited below, or the failure surfaces through a write
    try {
      await feed((bytes) => this.push(bytes));
      // The last batch goes with end(): zlib sees Z_FINISH with it, as zlib.gzip() would.
      const last = this.filled ? this.batches[this.current]!.subarray(0, this.filled) : undefined;
      if (last) this.onInput?.(last.length);
      gzip.end(last);
      await ended;
    } finally {
      gzip.destroy();
      this.gzip = null;
      this.sink = null;
      // Every batch write completed before the stream ended (or it failed): all buffers are free.
      this.inFlight.fill(null);
      this.filled = 0;
    }
    await sink.ready();
    return this.memberBytes;
  }

  private async runWhole(sink: CompressedSink, feed: (push: (bytes: Buffer) => Promise<void>) => Promise<void>): Promise<number> {
    const parts: Buffer[] = [];
    await feed(async (bytes) => {
      parts.push(Buffer.from(bytes)); // pieces may be views of a reused buffer
      this.onInput?.(bytes.length);
    });
    const compressed = await gzipAsync(Buffer.concat(parts), { level: 0 });
    sink.write(compressed);
    await sink.ready();
    return compressed.length;
  }

  private async push(bytes: Buffer): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, BATCH_BYTES - this.filled);
      bytes.copy(this.batches[this.current]!, this.filled, at, at + n);
      this.filled += n;
      at += n;
      if (this.filled === BATCH_BYTES) await this.send();
    }
  }

  /** Hands the full current batch to zlib and moves to the next buffer, waiting until zlib is done with it. */
  private async send(): Promise<void> {
    const batch = this.batches[this.current]!;
    this.onInput?.(batch.length);
    const gzip = this.gzip!;
    const written = new Promise<void>((resolve, reject) => gzip.write(batch, (err) => (err ? reject(err) : resolve())));
    written.catch(() => {}); // awaited when this buffer comes round again
    this.inFlight[this.current] = written;
    this.current = (this.current + 1) % BATCHES;
    this.filled = 0;
    const previous = this.inFlight[this.current];
    if (previous) {
      await previous;
      this.inFlight[this.current] = null;
    }
    if (this.failure) throw this.failure;
    // Compressed output piles up in the sink while zlib runs ahead of it: let it drain.
    await this.sink!.ready();
  }
}

/** zlib's output buffer for a member of `size` bytes: under 4 KiB it comes from Node's pool (no allocation of its own). */
function outputChunk(size: number): number {
  if (size <= 6 << 10) return 4095;
  return Math.min(64 << 10, 2 ** Math.ceil(Math.log2(size / 2)));
}
