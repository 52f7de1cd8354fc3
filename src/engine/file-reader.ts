import type { LayerNode } from '../estargz/layer-index.js';
import type { StoreMetrics } from '../metrics/store-metrics.js';
import type { ChunkLoader, ChunkWant } from './chunk-loader.js';
import { EngineError } from './errors.js';
import { ReadAhead } from './read-ahead.js';

/**
 * File reads of a layer (the `diff` tree): every byte served comes from a
 * chunk the loader verified against its digest. Each read also starts the
 * read-ahead (ReadAhead) in a request of its own, which it does not wait for.
 */
export class FileReader {
  private readonly readAhead: ReadAhead;

  constructor(
    /** Label for errors. */
    private readonly layer: string,
    private readonly loader: Pick<ChunkLoader, 'load' | 'tuning' | 'isCached' | 'isLoading'>,
    /** Every chunk of the layer in blob order, for the read-ahead past the file. */
    chunks: () => readonly ChunkWant[],
    private readonly metrics: StoreMetrics,
  ) {
    this.readAhead = new ReadAhead(loader, chunks);
  }

  /** Reads file bytes [offset, offset + length) of `node` (`path`: the name it was opened by, for errors). */
  async read(node: LayerNode, offset: number, length: number, path: string = node.path): Promise<Buffer> {
    const parts = await this.readParts(node, offset, length, path);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * The same bytes as `read`, as the pieces of the verified chunks that hold
   * them, in order and not joined: the FUSE reply writes them out as they are
   * (one copy of a 1 MiB read saved; it cost more than the read itself when
   * a file's chunks are 64 KiB).
   */
  async readParts(node: LayerNode, offset: number, length: number, path: string = node.path): Promise<Buffer[]> {
    const end = Math.min(node.size, offset + length);
    if (node.type !== 'reg' || offset >= end) return [];
    const chunks = node.chunks;
    // First chunk that ends after `offset` (chunks are in file order).
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chunks[mid]!.fileOffset + chunks[mid]!.size <= offset) lo = mid + 1;
      else hi = mid;
    }
    const wants: ChunkWant[] = [];
    let next = lo;
    for (; next < chunks.length && chunks[next]!.fileOffset < end; next++) wants.push({ chunk: chunks[next]!, path });
    // Whether this read needs a fetch no read-ahead (or earlier read) started: the read-ahead is judged by it.
    const miss = wants.some(({ chunk }) => !this.loader.isCached(chunk.digest) && !this.loader.isLoading(chunk.digest));
    const loads = this.loader.load(wants, 'on_demand');
    // Read-ahead goes in a request of its own, so that this read waits only for its own bytes;
    // it is not waited for, and its failures are not this read's.
    const extra = this.readAhead.after(node, lo, next, path, miss);
    // Dropped on purpose: a read-ahead failure is met again, and reported, by the read that needs that chunk.
    if (extra.length) for (const p of this.loader.load(extra, 'on_demand')) p.catch(() => {});
    const datas = await Promise.all(loads);
    const parts = wants.map(({ chunk }, i) => datas[i]!.subarray(Math.max(offset, chunk.fileOffset) - chunk.fileOffset, Math.min(end, chunk.fileOffset + chunk.size) - chunk.fileOffset));
    let total = 0;
    for (const p of parts) total += p.length;
    // The last line of defence for "no byte that no digest covers": the index guarantees that chunks tile
    // the file and the loader that each is exactly its size; a read that still comes out short is refused.
    if (total !== end - offset) {
      throw new EngineError('SHORT_READ', `layer ${this.layer}: ${JSON.stringify(path)} [${offset}, ${end}) has ${total} verified bytes, not ${end - offset}`, { layer: this.layer, path, fileOffset: offset });
    }
    this.metrics.bytesServed.inc({ kind: 'diff' }, total);
    return parts;
  }
}
