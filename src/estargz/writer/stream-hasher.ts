import { createHash, type Hash } from 'node:crypto';
import type { FileWindow } from './file-window.js';
import type { MemberPlan, Part } from './layout.js';

/** Tar padding is under one block. */
const ZEROS = Buffer.alloc(512);

/**
 * Hashes the uncompressed stream in member order: the whole stream (the
 * diffID), each chunk (its chunkDigest) and each regular file (its digest),
 * writing the digests into the TOC entries the layout made. It reads the
 * staged tar itself, so compression workers never need to hand bytes back.
 */
export class StreamHasher {
  private readonly diff = createHash('sha256');
  /** Digest of the file whose chunks are being read, when it has several. */
  private file: Hash | null = null;
  private bytes = 0;

  constructor(private readonly window: FileWindow) {}

  get size(): number {
    return this.bytes;
  }

  async member(m: MemberPlan): Promise<void> {
    for (const part of m.parts) await this.part(part);
  }

  /** Bytes that are not part of a member plan (the TOC member). */
  update(bytes: Buffer): void {
    this.diff.update(bytes);
    this.bytes += bytes.length;
  }

  diffID(): string {
    return 'sha256:' + this.diff.digest('hex');
  }

  private async part(p: Part): Promise<void> {
    if (p.kind === 'zero') {
      for (let left = p.length; left > 0; left -= ZEROS.length) this.update(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
      return;
    }
    const chunk = p.chunk;
    // A file of one chunk: its digest is the chunk's, one hash does both.
    const own = chunk ? createHash('sha256') : null;
    if (chunk?.first && !chunk.last) this.file = createHash('sha256');
    const fileHash = chunk && !(chunk.first && chunk.last) ? this.file : null;
    const visit = (piece: Buffer): void => {
      this.update(piece);
      own?.update(piece);
      fileHash?.update(piece);
    };
    if (p.kind === 'bytes') visit(p.bytes);
    else await this.window.forEach(p.offset, p.length, visit);
    if (!chunk) return;
    chunk.entry.chunkDigest = 'sha256:' + own!.digest('hex');
    if (chunk.first && chunk.last) chunk.file.digest = chunk.entry.chunkDigest;
    else if (chunk.last) {
      chunk.file.digest = 'sha256:' + fileHash!.digest('hex');
      this.file = null;
    }
  }
}
