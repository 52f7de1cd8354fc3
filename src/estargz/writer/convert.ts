import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { EstargzError } from '../errors.js';
import { encodeFooter } from '../footer.js';
import { headerCodec } from '../tar/header-codec.js';
import { paddedSize, type TarEntry, type TarHeader } from '../tar/parser.js';
import {
  LANDMARK_CONTENTS,
  TOC_TAR_NAME,
  formatModtime,
  serializeToc,
  sha256Digest,
  type TocEntryJson,
  type TocEntryType,
} from '../toc.js';
import { MemberWriter } from './member-writer.js';
import { LANDMARK, orderEntries } from './order.js';
import { stageTar, type TarInput } from './stage-tar.js';

export const DEFAULT_CHUNK_SIZE = 4 << 20;
export const DEFAULT_COMPRESSION_LEVEL = 9;

export interface ConvertOptions {
  /** Largest uncompressed chunk of a regular file per gzip member. */
  chunkSize?: number;
  /** Files to put first (prefetched on start); names as in the tar. */
  prioritizedFiles?: readonly string[];
  /** gzip level 0–9. */
  level?: number;
  /** Where a compressed or streamed input is spooled. */
  tmpDir?: string;
}

export interface ConvertResult {
  /** sha256 of the blob (the OCI layer digest). */
  digest: string;
  size: number;
  /** sha256 of the whole uncompressed stream, TOC entry included. */
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
  /** Prioritized names that the layer does not contain. */
  missedPrioritized: string[];
}

const TYPE_BY_FLAG: Record<string, TocEntryType> = {
  '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};
const ZERO_BLOCKS = Buffer.alloc(1024);

/** Reads the staged tar mostly front to back: a read-ahead window turns many small reads into few. */
class WindowedReader {
  private window = Buffer.alloc(0);
  private windowStart = 0;
  constructor(private readonly fh: FileHandle, private readonly windowSize = 1 << 20) {}

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.windowStart && offset + length <= this.windowStart + this.window.length) {
      return this.window.subarray(offset - this.windowStart, offset - this.windowStart + length);
    }
    const size = Math.max(length, this.windowSize);
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.fh.read(buf, got, size - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < length) throw new EstargzError('INVALID_TAR', `input tar ends at ${offset + got}, inside an entry that needs ${offset + length}`);
    if (length >= this.windowSize) return buf.subarray(0, length);
    this.window = buf.subarray(0, got);
    this.windowStart = offset;
    return this.window.subarray(0, length);
  }
}

/** Builds TOC entries in the reference's key order, leaving out zero values as Go's omitempty does. */
class TocBuilder {
  readonly entries: TocEntryJson[] = [];
  /** Member index of each entry's payload, resolved to a blob offset at the end. */
  private readonly memberOf = new Map<TocEntryJson, number>();
  private readonly lastUserName = new Map<number, string>();
  private readonly lastGroupName = new Map<number, string>();

  private nameIfChanged(names: Map<number, string>, id: number, name: string): string | undefined {
    if (!name || names.get(id) === name) return undefined;
    names.set(id, name);
    return name;
  }

  addHeader(h: TarHeader, type: TocEntryType): TocEntryJson {
    const nz = (n: number): number | undefined => (n === 0 ? undefined : n);
    const xattrNames = [...h.xattrs.keys()].sort();
    const entry: TocEntryJson = {
      name: h.name,
      type,
      size: type === 'reg' ? nz(h.size) : undefined,
      modtime: Math.trunc(h.mtime) === 0 ? undefined : formatModtime(Math.round(h.mtime)),
      linkName: type === 'hardlink' || type === 'symlink' ? h.linkname || undefined : undefined,
      mode: nz(h.mode),
      uid: nz(h.uid),
      gid: nz(h.gid),
      userName: this.nameIfChanged(this.lastUserName, h.uid, h.uname),
      groupName: this.nameIfChanged(this.lastGroupName, h.gid, h.gname),
      offset: undefined,
      devMajor: type === 'char' || type === 'block' ? nz(h.devmajor) : undefined,
      devMinor: type === 'char' || type === 'block' ? nz(h.devminor) : undefined,
      xattrs: xattrNames.length ? Object.fromEntries(xattrNames.map((k) => [k, h.xattrs.get(k)!.toString('base64')])) : undefined,
      digest: undefined,
      chunkOffset: undefined,
      chunkSize: undefined,
      chunkDigest: undefined,
    };
    this.entries.push(entry);
    return entry;
  }

  addChunk(name: string): TocEntryJson {
    const entry: TocEntryJson = { name, type: 'chunk', offset: undefined, chunkOffset: undefined, chunkSize: undefined, chunkDigest: undefined };
    this.entries.push(entry);
    return entry;
  }

  setMember(entry: TocEntryJson, memberIndex: number): void {
    this.memberOf.set(entry, memberIndex);
  }

  resolveOffsets(offsets: readonly number[]): void {
    for (const [entry, index] of this.memberOf) entry.offset = offsets[index];
  }
}

/**
 * Converts a layer tar (plain or gzip, file or stream) to eStargz, written to
 * `output`: a gzip member starts at every regular file's payload and every
 * chunk, the TOC is the last entry, then the 51-byte footer. Each entry's tar
 * header bytes are copied verbatim, so extracting the blob yields the input
 * entries exactly (plus the landmark and `stargz.index.json`).
 */
export async function convertLayer(input: TarInput, output: Writable, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const level = opts.level ?? DEFAULT_COMPRESSION_LEVEL;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`chunk size must be a positive integer, got ${chunkSize}`);
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new RangeError(`compression level must be 0–9, got ${level}`);

  const staged = await stageTar(input, opts.tmpDir);
  const fh = await open(staged.path, 'r');
  try {
    const ordering = orderEntries(staged.entries, opts.prioritizedFiles ?? []);
    const reader = new WindowedReader(fh);
    const members = new MemberWriter(output, { level });
    const toc = new TocBuilder();
    const diffHash = createHash('sha256');
    let uncompressedSize = 0;

    // The member being filled: tar headers and padding join the previous payload's member.
    let current: Buffer[] = [];
    let currentBytes = 0;
    let memberIndex = 0;
    const append = (bytes: Buffer): void => {
      if (bytes.length === 0) return;
      current.push(bytes);
      currentBytes += bytes.length;
      diffHash.update(bytes);
      uncompressedSize += bytes.length;
    };
    const closeMember = async (): Promise<void> => {
      if (currentBytes === 0) return;
      const data = current.length === 1 ? current[0]! : Buffer.concat(current, currentBytes);
      current = [];
      currentBytes = 0;
      memberIndex = (await members.add(data)) + 1;
    };

    const writePayload = async (name: string, entry: TocEntryJson, size: number, readAt: (off: number, len: number) => Promise<Buffer>): Promise<void> => {
      const fileHash = createHash('sha256');
      let chunkEntry = entry;
      for (let written = 0; written < size;) {
        await closeMember();
        const len = Math.min(chunkSize, size - written);
        const bytes = await readAt(written, len);
        fileHash.update(bytes);
        if (written > 0) chunkEntry = toc.addChunk(name);
        toc.setMember(chunkEntry, memberIndex);
        if (written > 0) chunkEntry.chunkOffset = written;
        // Like the reference: the size is explicit except on a last chunk shorter than chunkSize.
        if (size - written >= chunkSize) chunkEntry.chunkSize = len;
        chunkEntry.chunkDigest = sha256Digest(bytes);
        append(bytes);
        written += len;
      }
      entry.digest = 'sha256:' + fileHash.digest('hex');
      append(Buffer.alloc(paddedSize(size) - size));
    };

    for (const item of ordering.items) {
      if (item === LANDMARK) {
        const header = headerCodec.encode({ name: ordering.landmark, mode: 0, uid: 0, gid: 0, size: 1, mtime: new Date(0), type: 'file' })!;
        append(header);
        const entry = toc.addHeader({
          name: ordering.landmark, typeflag: '0', mode: 0, uid: 0, gid: 0, size: 1, mtime: 0,
          linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0, xattrs: new Map(),
        }, 'reg');
        await writePayload(ordering.landmark, entry, 1, async () => Buffer.of(LANDMARK_CONTENTS));
        continue;
      }
      await writeEntry(item);
    }

    async function writeEntry(e: TarEntry): Promise<void> {
      const type = TYPE_BY_FLAG[e.header.typeflag];
      if (!type) {
        throw new EstargzError('INVALID_TAR', `tar entry ${JSON.stringify(e.header.name)} at offset ${e.headerOffset} has type ${JSON.stringify(e.header.typeflag)}, which eStargz cannot hold`);
      }
      append(await reader.read(e.headerOffset, e.dataOffset - e.headerOffset));
      const entry = toc.addHeader(e.header, type);
      if (type === 'reg') {
        if (e.payloadSize === 0) entry.digest = sha256Digest(Buffer.alloc(0));
        else await writePayload(e.header.name, entry, e.payloadSize, (off, len) => reader.read(e.dataOffset + off, len));
      }
    }

    await closeMember();
    await members.flush();
    toc.resolveOffsets(members.offsets);

    const tocJson = serializeToc({ version: 1, entries: toc.entries });
    const tocHeader = headerCodec.encode({ name: TOC_TAR_NAME, mode: 0, uid: 0, gid: 0, size: tocJson.length, mtime: new Date(0), type: 'file' })!;
    append(tocHeader);
    append(tocJson);
    append(Buffer.alloc(paddedSize(tocJson.length) - tocJson.length));
    append(ZERO_BLOCKS);
    await closeMember();
    await members.flush();
    const tocOffset = members.offsets[memberIndex - 1]!;
    await members.writeRaw(encodeFooter(tocOffset));

    return {
      digest: members.digest(),
      size: members.size,
      diffID: 'sha256:' + diffHash.digest('hex'),
      tocDigest: sha256Digest(tocJson),
      uncompressedSize,
      missedPrioritized: ordering.missed,
    };
  } finally {
    await fh.close();
    await staged.cleanup();
  }
}
