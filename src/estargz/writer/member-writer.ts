import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

const gzipAsync = promisify(gzip);

export interface MemberWriterOptions {
  level: number;
  /** Members compressing at once. node:zlib's async calls run on libuv's thread pool, so this is real parallelism. */
  maxInFlight?: number;
  /** Uncompressed bytes held by members still compressing. */
  maxInFlightBytes?: number;
}

/**
 * Writes a sequence of gzip members to `out`, compressing several at once but
 * writing them in order, and records where each one starts in the output. It
 * also hashes and counts the output (the blob digest and size).
 */
export class MemberWriter {
  /** Output offset of member i, known once member i is written. */
  readonly offsets: number[] = [];
  private readonly pending: { index: number; compressed: Promise<Buffer>; bytes: number }[] = [];
  private pendingBytes = 0;
  private count = 0;
  private written = 0;
  private readonly hash = createHash('sha256');
  private readonly maxInFlight: number;
  private readonly maxInFlightBytes: number;

  constructor(private readonly out: Writable, private readonly opts: MemberWriterOptions) {
    this.maxInFlight = opts.maxInFlight ?? 4;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? 16 << 20;
  }

  /** Queues one member's uncompressed bytes; returns its index. */
  async add(data: Buffer): Promise<number> {
    const index = this.count++;
    const compressed = gzipAsync(data, { level: this.opts.level });
    compressed.catch(() => {}); // awaited in order below; avoid an unhandled rejection meanwhile
    this.pending.push({ index, compressed, bytes: data.length });
    this.pendingBytes += data.length;
    while (this.pending.length > this.maxInFlight || this.pendingBytes > this.maxInFlightBytes) {
      await this.writeOldest();
    }
    return index;
  }

  /** Writes every queued member. */
  async flush(): Promise<void> {
    while (this.pending.length) await this.writeOldest();
  }

  /** Appends bytes that are already in their final form (the footer). */
  async writeRaw(bytes: Buffer): Promise<void> {
    await this.flush();
    await this.write(bytes);
  }

  get size(): number {
    return this.written;
  }

  digest(): string {
    return 'sha256:' + this.hash.digest('hex');
  }

  private async writeOldest(): Promise<void> {
    const next = this.pending.shift()!;
    this.pendingBytes -= next.bytes;
    const bytes = await next.compressed;
    this.offsets[next.index] = this.written;
    await this.write(bytes);
  }

  private async write(bytes: Buffer): Promise<void> {
    this.hash.update(bytes);
    this.written += bytes.length;
    if (!this.out.write(bytes)) await once(this.out, 'drain');
  }
}
