import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { CompressedSink } from './member-compressor.js';

const COPY_BYTES = 256 << 10;

/** Resolves once `s` can take more; rejects if it failed or closed (then 'drain' would never come). */
async function drained(s: Writable): Promise<void> {
  if (s.errored) throw s.errored;
  if (s.destroyed) throw new Error('the output was closed before the blob was written');
  if (!s.writableNeedDrain) return;
  const ac = new AbortController();
  try {
    await Promise.race([
      once(s, 'drain', { signal: ac.signal }),
      once(s, 'close', { signal: ac.signal }).then(() => { throw s.errored ?? new Error('the output was closed before the blob was written'); }),
    ]);
  } finally {
    ac.abort();
  }
}

/** Where one segment's compressed bytes go: straight to the output, or to a spill file until its turn. */
export interface SegmentSink extends CompressedSink {
  readonly segment: number;
}

interface Spill {
  path: string;
  stream: WriteStream;
}

/**
 * Puts segments (runs of consecutive gzip members compressed by different
 * workers at once) into the output in order. The segment whose turn it is
 * writes straight through; a segment that starts early goes to a spill file
 * in `spillDir` and is copied over when its turn comes, as the reference
 * converter does with its per-worker temporary files. Memory stays flat
 * whatever the layer size. Also hashes and counts what reaches the output
 * (the blob's digest and size).
 */
export class OrderedOutput {
  /** Next segment to reach the output. */
  private next = 0;
  /** Finished segments waiting for their turn (spilled). */
  private readonly waiting = new Map<number, Spill>();
  private readonly spills = new Map<number, Spill>();
  private readonly turnWaiters: { segment: number; resolve: () => void }[] = [];
  private readonly hash = createHash('sha256');
  private bytes = 0;

  constructor(
    private readonly out: Writable,
    private readonly spillDir: string,
    private readonly onWritten?: (total: number) => void,
  ) {}

  get size(): number {
    return this.bytes;
  }

  digest(): string {
    return 'sha256:' + this.hash.digest('hex');
  }

  /** Resolves once segment `segment - ahead` has reached the output: bounds how far workers run ahead. */
  async waitTurn(segment: number, ahead: number): Promise<void> {
    if (this.next >= segment - ahead) return;
    await new Promise<void>((resolve) => this.turnWaiters.push({ segment: segment - ahead, resolve }));
  }

  /** Lets every waitTurn() return (after a failure: the segments they wait for will not come). */
  releaseWaiters(): void {
    for (const w of this.turnWaiters.splice(0)) w.resolve();
  }

  open(segment: number): SegmentSink {
    if (segment === this.next) {
      return { segment, write: (b) => this.writeOut(b), ready: () => this.ready() };
    }
    const path = join(this.spillDir, `segment-${segment}`);
    const stream = createWriteStream(path);
    // A write error is reported by finished() in finish(); without a listener it would crash the process first.
    stream.on('error', () => {});
    const spill = { path, stream };
    this.spills.set(segment, spill);
    return {
      segment,
      write: (b) => { stream.write(b); },
      ready: () => drained(stream),
    };
  }

  /** Marks `segment` complete; writes it and every completed segment after it that is now due. */
  async finish(segment: number): Promise<void> {
    const spill = this.spills.get(segment);
    if (spill) {
      this.spills.delete(segment);
      spill.stream.end();
      await finished(spill.stream);
      this.waiting.set(segment, spill);
    } else {
      this.advance();
    }
    for (let due = this.waiting.get(this.next); due; due = this.waiting.get(this.next)) {
      this.waiting.delete(this.next);
      await this.copy(due.path);
      await rm(due.path, { force: true });
      this.advance();
    }
  }

  /** Writes bytes already in final form (the TOC member, the footer); only once every segment is out. */
  async writeRaw(bytes: Buffer): Promise<void> {
    this.writeOut(bytes);
    await this.ready();
  }

  /** Closes spill files of segments that never finished (after a failure). */
  async abandon(): Promise<void> {
    for (const s of [...this.spills.values(), ...this.waiting.values()]) {
      s.stream.destroy();
      await rm(s.path, { force: true });
    }
    this.spills.clear();
    this.waiting.clear();
  }

  private advance(): void {
    this.next++;
    for (let i = this.turnWaiters.length - 1; i >= 0; i--) {
      const w = this.turnWaiters[i]!;
      if (this.next >= w.segment) {
        this.turnWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private writeOut(bytes: Buffer): void {
    this.hash.update(bytes);
    this.bytes += bytes.length;
    this.out.write(bytes);
    this.onWritten?.(this.bytes);
  }

  private ready(): Promise<void> {
    return drained(this.out);
  }

  private async copy(path: string): Promise<void> {
    const fh = await open(path, 'r');
    try {
      for (;;) {
        // A fresh buffer per piece: the output may keep what it is given.
        const buf = Buffer.allocUnsafe(COPY_BYTES);
        const { bytesRead } = await fh.read(buf, 0, COPY_BYTES, null);
        if (bytesRead === 0) break;
        this.writeOut(buf.subarray(0, bytesRead));
        await this.ready();
      }
    } finally {
      await fh.close();
    }
  }
}
