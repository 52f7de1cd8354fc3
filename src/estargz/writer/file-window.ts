import type { FileHandle } from 'node:fs/promises';
import { EstargzError } from '../errors.js';

/**
 * Reads ranges of the staged tar through one reused buffer: a reader that
 * mostly moves forward makes few large reads, and reading allocates nothing.
 * Pieces handed to `visit` are views of that buffer: they are valid until
 * the visit's promise settles and must be copied if kept.
 */
export class FileWindow {
  private readonly buf: Buffer;
  private start = 0;
  private end = 0;

  constructor(private readonly fh: FileHandle, size = 256 << 10) {
    this.buf = Buffer.allocUnsafe(size);
  }

  async forEach(offset: number, length: number, visit: (piece: Buffer) => void | Promise<void>): Promise<void> {
    while (length > 0) {
      if (offset < this.start || offset >= this.end) await this.fill(offset, offset + length);
      const n = Math.min(length, this.end - offset);
      await visit(this.buf.subarray(offset - this.start, offset - this.start + n));
      offset += n;
      length -= n;
    }
  }

  private async fill(offset: number, needEnd: number): Promise<void> {
    let got = 0;
    while (got < this.buf.length) {
      const { bytesRead } = await this.fh.read(this.buf, got, this.buf.length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.start = offset;
    this.end = offset + got;
    if (got === 0) {
      throw new EstargzError('INVALID_TAR', `input tar ends at ${offset}, inside an entry that needs ${needEnd}`);
    }
  }
}
