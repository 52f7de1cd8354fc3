import type { LayerNode } from '../estargz/layer-index.js';
import type { ChunkLoader, ChunkWant } from './chunk-loader.js';

/** What read-ahead asks of the chunk loader: its tuning, and whether a chunk is cached already. */
export type ReadAheadLoader = Pick<ChunkLoader, 'tuning' | 'isCached'>;

/**
 * What to load along with an on-demand read: the next chunks of the same
 * file (a sequential reader wants them next), and the members after it in
 * the blob (the next files of the directory: fetching them now saves a
 * round trip each). The blob read-ahead advances in steps, topped up when
 * less than half a step is left ahead, so that a reader going file by file
 * costs one request per step, not one per file. Like the kernel's
 * read-ahead, the step starts at `readAheadBytes` and doubles (up to
 * `readAheadMaxBytes`) each time the reader comes back for more in order:
 * an unpacker or scanner walking the layer gets large requests with room to
 * overlap fetch, decode and serving, while a process that opens files here
 * and there (a container starting) only ever costs the first step.
 *
 * One per layer: the window is the layer's, whichever file is read.
 */
export class ReadAhead {
  /** Blob offset up to which on-demand reads have asked for the following members. */
  private frontier = 0;
  /** The current step: grows while reads stay in order, back to the first step on a jump. */
  private step = 0;

  constructor(
    private readonly loader: ReadAheadLoader,
    /** Every chunk of the layer in blob order (see chunksInBlobOrder). */
    private readonly chunks: () => readonly ChunkWant[],
  ) {}

  /**
   * The chunks to load after a read of `node` that needs its chunks before
   * `nextChunk`, and covers blob bytes [readStart, readEnd). Cached chunks
   * are left out. Moves the window.
   */
  after(node: LayerNode, nextChunk: number, path: string, readStart: number, readEnd: number): ChunkWant[] {
    const { readAheadChunks, readAheadBytes, readAheadMaxBytes } = this.loader.tuning;
    const out: ChunkWant[] = [];
    for (let i = nextChunk; i < Math.min(node.chunks.length, nextChunk + readAheadChunks); i++) {
      if (!this.loader.isCached(node.chunks[i]!.digest)) out.push({ chunk: node.chunks[i]!, path });
    }
    if (readAheadBytes <= 0) return out;
    let step = Math.max(this.step, readAheadBytes);
    if (readStart > this.frontier || this.frontier - readEnd > 2 * step) {
      // A read that starts past the window, or far behind it, is a jump: a new window, first step.
      this.frontier = readEnd;
      step = readAheadBytes;
    } else if (this.frontier - readEnd >= step / 2) {
      return out;
    } else if (this.frontier > readEnd) {
      // Back in order for more before the window ran out: it is being consumed, so widen it.
      step = Math.min(2 * step, Math.max(readAheadBytes, readAheadMaxBytes));
    }
    this.step = step;
    const start = Math.max(this.frontier, readEnd);
    const limit = readEnd + step;
    const all = this.chunks();
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid]!.chunk.blobOffset < start) lo = mid + 1;
      else hi = mid;
    }
    let end = limit;
    for (let i = lo; i < all.length && all[i]!.chunk.blobOffset < limit; i++) {
      const c = all[i]!.chunk;
      // A small member straddling the limit (the next file of a directory) comes too, or its
      // read would wait for a fetch of its own; a large one (a big file's chunk) is left to its read.
      if (c.blobEnd > limit && c.blobEnd - c.blobOffset > readAheadBytes / 4) {
        end = c.blobOffset;
        break;
      }
      end = Math.max(end, c.blobEnd);
      if (!this.loader.isCached(c.digest)) out.push(all[i]!);
    }
    this.frontier = end;
    return out;
  }
}
