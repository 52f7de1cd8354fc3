import { open, type FileHandle } from 'node:fs/promises';

/**
 * The one seam between the format and where the bytes live: a blob of known
 * size that can be read at any offset. A local file and a registry blob both
 * implement it, so the same reader code serves both.
 */
export interface RangedSource {
  readonly size: number;
  /** Exactly `length` bytes at `offset`; rejects if the range is outside the blob. */
  read(offset: number, length: number): Promise<Buffer>;
}

export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new RangeError(`range [${offset}, ${offset + length}) is outside the blob of ${size} bytes`);
  }
}

/** A blob held in memory (tests, small blobs). */
export class BufferSource implements RangedSource {
  constructor(private readonly bytes: Buffer) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.size, offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
}

/** A blob in a local file, read with positional reads (no seek state shared between readers). */
export class FileSource implements RangedSource {
  private constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<FileSource> {
    const handle = await open(path, 'r');
    try {
      const st = await handle.stat();
      return new FileSource(handle, st.size, path);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.size, offset, length);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new Error(`${this.path}: unexpected end of file at ${offset + done}`);
      done += bytesRead;
    }
    return buf;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
