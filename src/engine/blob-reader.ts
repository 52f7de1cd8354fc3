import { createHash, type Hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { EstargzError } from '../estargz/errors.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { InFlight } from '../util/in-flight.js';
import type { BlobFetcher } from './chunk-loader.js';

export interface BlobReaderOptions {
  /** Fetch unit: reads are served from aligned blocks of this size. */
  blockBytes: number;
  /** Memory for recently read blocks. */
  cacheBytes: number;
  /** Blocks fetched ahead of a sequential reader. */
  readaheadBlocks: number;
}

export const DEFAULT_BLOB_READER: BlobReaderOptions = { blockBytes: 4 << 20, cacheBytes: 64 << 20, readaheadBlocks: 3 };

/** Out-of-order blocks kept for hashing; past this the reader is not sequential and the digest is not checked. */
const MAX_PENDING_HASH_BLOCKS = 32;

/**
 * Raw compressed reads of a layer blob (the store's `blob` file, which podman
 * reads to export a lazily pulled layer). Reads are served from aligned
 * blocks fetched with read-ahead, so a sequential reader turns into a few
 * large requests. Blocks are hashed in order as they arrive; when a reader
 * has gone through the whole blob, the read that reaches its end fails if
 * the bytes do not hash to the layer digest, so an export never completes
 * with wrong data. (A reader that jumps around is served unverified: only
 * whole-blob reads can be checked.)
 */
export class BlobReader {
  private readonly blocks: LRUCache<number, Buffer>;
  /** Blocks being fetched, by index. */
  private readonly inflight = new InFlight<number, Buffer>();
  private readonly blockCount: number;
  private readonly requested = new Set<number>();
  private hash: Hash | null = createHash('sha256');
  private hashNext = 0;
  private readonly pendingHash = new Map<number, Buffer>();
  private verdict: { ok: boolean; actual?: string } | undefined;
  private readonly verdictWaiters: (() => void)[] = [];
  private lastEnd = -1;

  constructor(
    private readonly fetcher: BlobFetcher,
    private readonly digest: string,
    private readonly opts: BlobReaderOptions,
    /** Every block fetched, with its bytes (held for the whole-layer check; never modified). */
    private readonly onFetched: (offset: number, end: number, data: Buffer) => void,
    private readonly log: Telemetry['log'],
    private readonly metrics: Telemetry['metrics'],
  ) {
    this.blockCount = Math.ceil(fetcher.size / opts.blockBytes);
    this.blocks = new LRUCache<number, Buffer>({
      maxSize: Math.max(opts.cacheBytes, opts.blockBytes),
      sizeCalculation: (b) => Math.max(1, b.length),
    });
  }

  get size(): number {
    return this.fetcher.size;
  }

  /** Whether the whole blob was read in order and matched its digest (undefined: not known yet). */
  get verified(): boolean | undefined {
    return this.verdict?.ok;
  }

  /** Reads raw compressed bytes [offset, offset + length) of the blob (fewer at its end). */
  async read(offset: number, length: number): Promise<Buffer> {
    const parts = await this.readParts(offset, length);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * The same bytes as the pieces of the blocks that hold them, in order, not
   * joined: a FUSE read that straddles two blocks is answered from both as
   * they are (joining the two whole 4 MiB blocks for it was most of the main
   * thread's time while `sha256sum blob` ran).
   */
  async readParts(offset: number, length: number): Promise<Buffer[]> {
    const parts = await this.readBlocks(offset, length);
    let total = 0;
    for (const p of parts) total += p.length;
    this.metrics.bytesServed.inc({ kind: 'blob' }, total);
    return parts;
  }

  private async readBlocks(offset: number, length: number): Promise<Buffer[]> {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return [];
    const first = Math.floor(offset / this.opts.blockBytes);
    const last = Math.floor((end - 1) / this.opts.blockBytes);
    const sequential = offset === this.lastEnd || offset === 0;
    this.lastEnd = end;
    const wanted: Promise<Buffer>[] = [];
    for (let i = first; i <= last; i++) wanted.push(this.block(i));
    if (sequential) {
      // Read-ahead nobody waits for yet: a failure is dropped here and met again by the read that needs the block.
      for (let i = last + 1; i <= Math.min(this.blockCount - 1, last + this.opts.readaheadBlocks); i++) void this.block(i).catch(() => {});
    }
    const blocks = await Promise.all(wanted);
    if (end === this.size) await this.checkDigest();
    return blocks.map((block, k) => {
      const base = (first + k) * this.opts.blockBytes;
      return block.subarray(Math.max(offset, base) - base, Math.min(end, base + block.length) - base);
    });
  }

  private block(i: number): Promise<Buffer> {
    const hit = this.blocks.get(i);
    if (hit) return Promise.resolve(hit);
    return this.inflight.share(i, () => {
      const offset = i * this.opts.blockBytes;
      const length = Math.min(this.opts.blockBytes, this.size - offset);
      this.requested.add(i);
      // The registry client counts the request (its traffic hook) as a 'blob' one.
      return this.fetcher.readRanges([{ offset, length }], undefined, 'blob').then(([data]) => {
        this.onFetched(offset, offset + length, data!);
        this.blocks.set(i, data!);
        this.hashBlock(i, data!);
        return data!;
      });
    });
  }

  /** Hashes blocks in order; an out-of-order block waits (bounded) for the ones before it. */
  private hashBlock(i: number, data: Buffer): void {
    if (!this.hash || i < this.hashNext) return;
    if (i > this.hashNext) {
      if (this.pendingHash.size >= MAX_PENDING_HASH_BLOCKS) {
        this.hash = null; // not a sequential reader: give up on the whole-blob check
        this.pendingHash.clear();
        this.settle(undefined);
        return;
      }
      this.pendingHash.set(i, data);
      return;
    }
    this.hash.update(data);
    this.hashNext++;
    for (let next = this.pendingHash.get(this.hashNext); next; next = this.pendingHash.get(this.hashNext)) {
      this.pendingHash.delete(this.hashNext);
      this.hash.update(next);
      this.hashNext++;
    }
    if (this.hashNext === this.blockCount) {
      const actual = 'sha256:' + this.hash.digest('hex');
      this.hash = null;
      this.settle({ ok: actual === this.digest, actual });
    }
  }

  private settle(verdict: { ok: boolean; actual?: string } | undefined): void {
    this.verdict = verdict;
    for (const w of this.verdictWaiters.splice(0)) w();
  }

  /** At the end of the blob: wait for the in-order hash when every block was read, and fail on a mismatch. */
  private async checkDigest(): Promise<void> {
    if (this.verdict === undefined && this.hash && this.requested.size === this.blockCount) {
      await new Promise<void>((resolve) => {
        this.verdictWaiters.push(resolve);
        // Blocks still in flight settle it; if one of them failed, nothing will.
        void Promise.allSettled(this.inflight.pending()).then(() => resolve());
      });
    }
    if (this.verdict && !this.verdict.ok) {
      this.metrics.verificationFailures.inc({ what: 'blob' });
      this.log.error({ digest: this.digest, actual: this.verdict.actual }, 'layer blob does not match its digest');
      throw new EstargzError('BLOB_DIGEST_MISMATCH', `layer blob ${this.digest} read in full hashes to ${this.verdict.actual}: the registry served wrong bytes`, {
        expected: this.digest,
        ...(this.verdict.actual && { actual: this.verdict.actual }),
      });
    }
  }
}
