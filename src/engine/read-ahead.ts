import type { LayerNode } from '../estargz/layer-index.js';
import type { ChunkLoader, ChunkWant } from './chunk-loader.js';

/** What read-ahead asks of the chunk loader: its tuning, and whether a chunk is cached already. */
export type ReadAheadLoader = Pick<ChunkLoader, 'tuning' | 'isCached'>;

/**
 * The members one run of the blob read-ahead asked for (a run: from a read
 * that needed a fetch of its own to the next such read), and how many of
 * their bytes readers went on to use. This is what the window is judged by:
 * bytes fetched ahead that no one reads are the cost of read-ahead, so it
 * only grows while they are read.
 */
class RunLedger {
  /** Members asked for and not read yet: blob offset → compressed bytes. */
  private readonly unread = new Map<number, number>();
  /** Every member asked for, in blob order (each top-up appends further on), and how many of them readers have passed. */
  private order: [offset: number, bytes: number][] = [];
  private head = 0;
  /** Compressed bytes asked for, of them read (at any time), and of them in the blob before the last read's end. */
  issued = 0;
  used = 0;
  passed = 0;

  add(offset: number, bytes: number): void {
    if (this.unread.has(offset)) return;
    this.unread.set(offset, bytes);
    this.order.push([offset, bytes]);
    this.issued += bytes;
  }

  /** Notes a read of the member at `offset`; true if this run had asked for it. */
  take(offset: number): boolean {
    const bytes = this.unread.get(offset);
    if (bytes === undefined) return false;
    this.unread.delete(offset);
    this.used += bytes;
    return true;
  }

  /** A reader got to blob offset `end`: the members before it were either read or skipped. */
  pass(end: number): void {
    while (this.head < this.order.length && this.order[this.head]![0] < end) this.passed += this.order[this.head++]![1];
    if (this.head > 1024) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * What to load along with an on-demand read: the next chunks of the same
 * file (a sequential reader wants them next), and the members after it in
 * the blob (the next files of the directory: fetching them now saves a
 * round trip each).
 *
 * The blob read-ahead goes in runs. A read that needs a member nobody
 * asked for yet (a miss) starts a run: one step of members after it. A
 * read of a member the run brought (a hit) tops the run up when less than
 * half a step is left ahead, so that a reader going file by file costs one
 * request per step, not one per file. The step only grows while the run's
 * bytes are read: at a top-up it doubles (up to `readAheadMaxBytes`) when
 * readers used at least three quarters of the members they went past, and
 * halves when they used less than a quarter. A new run's first step is
 * twice what readers used of the last run, between a sixteenth of
 * `readAheadBytes` and `readAheadBytes` (a layer's first run: all of it):
 * a process that opens files here and there (a container starting: python
 * importing modules) reads little of what each run brings, so its runs
 * stay small; an unpacker or scanner walking the layer reads everything,
 * so its window grows to the maximum, and keeps it across the files too
 * large to fetch ahead (reading those is a miss, not the end of the walk).
 *
 * Reads of members already cached or loading (read again, brought by the
 * file read-ahead, or prefetched) neither start a run nor grow one: only
 * the blob read-ahead's own members count as its hits.
 *
 * One per layer: the window is the layer's, whichever file is read.
 */
export class ReadAhead {
  /** Blob offset up to which the current run has asked for members. */
  private frontier = 0;
  /** The current run's step. */
  private step = 0;
  private run: RunLedger | undefined;
  /** Members the file read-ahead asked for and no read used yet (so that reading them is no miss of the blob's). */
  private readonly fileAhead = new Set<number>();

  constructor(
    private readonly loader: ReadAheadLoader,
    /** Every chunk of the layer in blob order (see chunksInBlobOrder). */
    private readonly chunks: () => readonly ChunkWant[],
  ) {}

  /**
   * The chunks to load after a read of `node` that needs its chunks
   * [first, next). `miss`: some of them were neither cached nor being
   * loaded when the read came (the reader went where no read-ahead did).
   * Cached chunks are left out. Moves the window.
   */
  after(node: LayerNode, first: number, next: number, path: string, miss: boolean): ChunkWant[] {
    const { readAheadChunks, readAheadBytes, readAheadMaxBytes } = this.loader.tuning;
    const out: ChunkWant[] = [];
    for (let i = next; i < Math.min(node.chunks.length, next + readAheadChunks); i++) {
      const c = node.chunks[i]!;
      if (this.loader.isCached(c.digest)) continue;
      out.push({ chunk: c, path });
      this.fileAhead.add(c.blobOffset);
    }
    if (readAheadBytes <= 0 || first >= next) return out;
    const readStart = node.chunks[first]!.blobOffset;
    const readEnd = node.chunks[next - 1]!.blobEnd;
    const minStep = Math.max(1, Math.floor(readAheadBytes / 16));
    const maxStep = Math.max(readAheadBytes, readAheadMaxBytes);
    let hit = false;
    for (let i = first; i < next; i++) {
      const offset = node.chunks[i]!.blobOffset;
      if (this.run?.take(offset)) hit = true;
      this.fileAhead.delete(offset);
    }
    const run = this.run;
    run?.pass(readEnd);
    if (hit && run) {
      if (this.frontier - readEnd >= this.step / 2) return out;
      if (4 * run.used >= 3 * run.passed) this.step = Math.min(2 * this.step, maxStep);
      else if (4 * run.used < run.passed) this.step = Math.max(minStep, Math.floor(this.step / 2));
    } else if (miss) {
      // A new run. A layer's first starts with `readAheadBytes`; a run with nothing to judge (it
      // found everything cached) passes its step on; otherwise the first step is twice what
      // readers used of the last run, so that a run that was left unread costs little the next
      // time, and a reader that used (nearly) all of it and needed more right where it ended keeps
      // its window.
      let step = readAheadBytes;
      if (run && run.issued === 0) {
        step = this.step;
      } else if (run) {
        step = Math.min(readAheadBytes, Math.max(minStep, 2 * run.used));
        if (4 * run.used >= 3 * run.issued && readStart <= this.frontier) step = Math.max(step, this.step);
      }
      // The file read-ahead's members are the file's: a run is judged by what it brought past them.
      this.fileAhead.clear();
      for (const w of out) this.fileAhead.add(w.chunk.blobOffset);
      this.run = new RunLedger();
      this.frontier = readEnd;
      this.step = step;
    } else {
      // Members loaded already (read again, or the file read-ahead's): no run starts or grows, but a
      // reader going on from the window's end (through a file too large to fetch ahead) moves it.
      if (readStart <= this.frontier) this.frontier = Math.max(this.frontier, readEnd);
      return out;
    }
    return this.extend(out, readEnd, readAheadBytes);
  }

  /** Asks for the members from the frontier to a step past `readEnd`, adding them to `out` and the run. */
  private extend(out: ChunkWant[], readEnd: number, readAheadBytes: number): ChunkWant[] {
    const run = this.run!;
    const start = Math.max(this.frontier, readEnd);
    const limit = readEnd + this.step;
    const all = this.chunks();
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid]!.chunk.blobOffset < start) lo = mid + 1;
      else hi = mid;
    }
    let end = Math.max(this.frontier, limit);
    for (let i = lo; i < all.length && all[i]!.chunk.blobOffset < limit; i++) {
      const c = all[i]!.chunk;
      // A small member straddling the limit (the next file of a directory) comes too, or its
      // read would wait for a fetch of its own; a large one (a big file's chunk) is left to its read.
      if (c.blobEnd > limit && c.blobEnd - c.blobOffset > readAheadBytes / 4) {
        end = c.blobOffset;
        break;
      }
      end = Math.max(end, c.blobEnd);
      if (this.loader.isCached(c.digest) || this.fileAhead.has(c.blobOffset)) continue;
      out.push(all[i]!);
      run.add(c.blobOffset, c.blobEnd - c.blobOffset);
    }
    this.frontier = end;
    return out;
  }
}
