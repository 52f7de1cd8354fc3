import { randomBytes } from 'node:crypto';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';

/** A held range of the blob: in memory, or written at its own offset in the spill file. */
interface Held {
  offset: number;
  end: number;
  data?: Buffer;
  /** Resolves once the range is in the spill file (false: the write failed, the range is a gap). */
  written?: Promise<boolean>;
}

/** What the blob range asked of `take` is made of: held pieces, and the gaps to fetch. */
export interface Taken {
  pieces: { offset: number; data: Buffer }[];
  gaps: { offset: number; end: number }[];
}

/**
 * Compressed bytes of a layer that readers (on-demand reads, prefetch, raw
 * blob reads) fetched while the layer's whole-layer check is still to come.
 *
 * Why keep compressed bytes: the check hashes every compressed byte in blob
 * order (blob digest) and rebuilds the tar from them (diff_id); the caches
 * only hold decoded chunks, and gzip cannot be redone byte for byte, so
 * without these bytes the check fetched the whole blob again (174 MB moved
 * for an 87 MB image). The background fetch walks the blob in order and,
 * for each of its ranges, takes what is held here and fetches only the gaps;
 * what it has gone past is let go.
 *
 * Memory is bounded: past `memoryBytes`, ranges go to a sparse spill file
 * (each at its blob offset) in the cache directory; without one they are not
 * held, and the check fetches them again (correct, only dearer).
 */
export class HeldSpans {
  /** Sorted, not overlapping. */
  private held: Held[] = [];
  private memory = 0;
  /** Blob offset before which nothing is wanted any more (the check went past it). */
  private floor = 0;
  private closed = false;
  private spill: Promise<FileHandle | undefined> | undefined;
  private readonly spillPath: string | undefined;

  constructor(private readonly memoryBytes: number, spillDir: string | undefined, label: string, private readonly log: Logger) {
    this.spillPath = spillDir && join(spillDir, `${label.replace(/[^A-Za-z0-9_.-]/g, '_')}.${randomBytes(4).toString('hex')}`);
  }

  /** Bytes held in memory (for tests and logs). */
  get memoryHeld(): number {
    return this.memory;
  }

  /**
   * Keeps the parts of [offset, offset + data.length) not held yet. Returns
   * whether a reference to `data` was kept: `true`, kept in memory (the
   * caller must not hand that buffer away: transfer it to a worker, or let
   * its memory be reused); a promise, parts are being written to the spill
   * file (the same, until it resolves: then no reference is left); `false`,
   * none.
   */
  hold(offset: number, data: Buffer): boolean | Promise<void> {
    if (this.closed) return false;
    const end = offset + data.length;
    let kept = false;
    const writes: Promise<boolean>[] = [];
    for (const gap of this.uncovered(Math.max(offset, this.floor), end)) {
      const part = data.subarray(gap.offset - offset, gap.end - offset);
      const h: Held = { offset: gap.offset, end: gap.end };
      if (this.memory + part.length <= this.memoryBytes) {
        h.data = part;
        this.memory += part.length;
        kept = true;
      } else if (this.spillPath) {
        // Written from this buffer before take() reads it back; the write keeps the reference meanwhile.
        h.written = this.write(part, gap.offset);
        writes.push(h.written);
      } else {
        continue;
      }
      this.insert(h);
    }
    if (kept) return true;
    // write() never rejects (a failed write is a gap).
    return writes.length > 0 ? Promise.all(writes).then(() => undefined) : false;
  }

  /** The parts of [offset, end) held, and the gaps between them. */
  async take(offset: number, end: number): Promise<Taken> {
    const pieces: Taken['pieces'] = [];
    for (const h of this.held) {
      if (h.end <= offset || h.offset >= end) continue;
      const from = Math.max(offset, h.offset);
      const to = Math.min(end, h.end);
      if (h.data) pieces.push({ offset: from, data: h.data.subarray(from - h.offset, to - h.offset) });
      else if (h.written && (await h.written)) {
        const data = await this.read(from, to - from);
        if (data) pieces.push({ offset: from, data });
      }
    }
    pieces.sort((a, b) => a.offset - b.offset);
    const gaps: Taken['gaps'] = [];
    let at = offset;
    for (const p of pieces) {
      if (p.offset > at) gaps.push({ offset: at, end: p.offset });
      at = Math.max(at, p.offset + p.data.length);
    }
    if (at < end) gaps.push({ offset: at, end });
    return { pieces, gaps };
  }

  /** The check went past `offset`: what lies before it is let go, and not held again. */
  release(offset: number): void {
    this.floor = Math.max(this.floor, offset);
    this.held = this.held.filter((h) => {
      if (h.end > this.floor) return true;
      if (h.data) this.memory -= h.data.length;
      return false;
    });
  }

  /** A new run of the check starts from the blob's start: bytes fetched from now on are held wherever they are. */
  rewind(): void {
    this.floor = 0;
  }

  /** Lets everything go and stops holding (the check is over, or the layer closed). */
  async close(): Promise<void> {
    this.closed = true;
    this.held = [];
    this.memory = 0;
    const spill = this.spill;
    this.spill = undefined;
    if (spill) {
      // Dropped on purpose: nothing held is read any more, and a spill file left behind is in the disk
      // cache's tmp/, which is emptied when the cache next opens.
      await (await spill)?.close().catch(() => {});
      if (this.spillPath) await rm(this.spillPath, { force: true }).catch(() => {});
    }
  }

  /** Sub-ranges of [offset, end) held by nothing. */
  private uncovered(offset: number, end: number): { offset: number; end: number }[] {
    const out: { offset: number; end: number }[] = [];
    let at = offset;
    for (const h of this.held) {
      if (h.end <= at) continue;
      if (h.offset >= end) break;
      if (h.offset > at) out.push({ offset: at, end: h.offset });
      at = Math.max(at, h.end);
    }
    if (at < end) out.push({ offset: at, end });
    return out;
  }

  private insert(h: Held): void {
    let i = this.held.length;
    while (i > 0 && this.held[i - 1]!.offset > h.offset) i--;
    this.held.splice(i, 0, h);
  }

  private file(): Promise<FileHandle | undefined> {
    this.spill ??= (async () => {
      try {
        await mkdir(join(this.spillPath!, '..'), { recursive: true });
        return await open(this.spillPath!, 'w+');
      } catch (err) {
        this.log.warn({ path: this.spillPath, err: (err as Error).message }, 'cannot spill held blob bytes to disk; the whole-layer check fetches them again');
        return undefined;
      }
    })();
    return this.spill;
  }

  private async write(data: Buffer, offset: number): Promise<boolean> {
    const fh = await this.file();
    if (!fh || this.closed) return false;
    try {
      await fh.write(data, 0, data.length, offset);
      return true;
    } catch {
      return false; // a gap: fetched again by the check
    }
  }

  private async read(offset: number, length: number): Promise<Buffer | undefined> {
    const fh = await this.file();
    if (!fh) return undefined;
    const out = Buffer.allocUnsafeSlow(length);
    try {
      const { bytesRead } = await fh.read(out, 0, length, offset);
      return bytesRead === length ? out : undefined;
    } catch {
      return undefined;
    }
  }
}
