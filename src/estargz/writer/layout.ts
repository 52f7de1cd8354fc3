import { EstargzError } from '../errors.js';
import { headerCodec } from '../tar/header-codec.js';
import { paddedSize, type TarEntry, type TarHeader } from '../tar/parser.js';
import { LANDMARK_CONTENTS, formatModtime, sha256Digest, type TocEntryJson, type TocEntryType } from '../toc.js';
import { LANDMARK, type OrderedItem, type Ordering } from './order.js';

/** Where a chunk's bytes go in the TOC: its own digest, and the digest of the file it belongs to. */
export interface ChunkTarget {
  entry: TocEntryJson;
  file: TocEntryJson;
  /** First and last chunk of the file (both for a file of one chunk). */
  first: boolean;
  last: boolean;
}

/** A run of a member's uncompressed bytes: from the staged tar, given bytes, or zeros (tar padding). */
export type Part =
  | { kind: 'file'; offset: number; length: number; chunk?: ChunkTarget }
  | { kind: 'bytes'; bytes: Buffer; chunk?: ChunkTarget }
  | { kind: 'zero'; length: number };

/** One gzip member of the output, before compression. */
export interface MemberPlan {
  /** Position among the blob's members (0 first). */
  index: number;
  parts: Part[];
  /** Uncompressed bytes. */
  size: number;
}

export function partLength(p: Part): number {
  return p.kind === 'bytes' ? p.bytes.length : p.length;
}

const TYPE_BY_FLAG: Record<string, TocEntryType> = {
  '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};
const EMPTY_DIGEST = sha256Digest(Buffer.alloc(0));

/** Builds TOC entries in the reference's key order, leaving out zero values as Go's omitempty does. */
export class TocBuilder {
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
    // Every key is set here, undefined or not, so that later assignments keep the reference's order in the JSON.
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

  /** `memberOffset(i)` is member i's offset in the blob. */
  resolveOffsets(memberOffset: (index: number) => number): void {
    for (const [entry, index] of this.memberOf) entry.offset = memberOffset(index);
    this.memberOf.clear();
  }
}

/**
 * Lays the output out as gzip members, in order, without reading any payload:
 * a member starts at every regular file's payload and at every chunk of it;
 * tar headers and padding join the member of the payload before them (the
 * first member holds the landmark's header alone). TOC entries are added to
 * `toc` as the walk goes; chunk and file digests are left for whoever reads
 * the bytes (see ChunkTarget). Items of `ordering` are released as they are
 * laid out, so the tar index does not outlive its use.
 */
export function* layoutMembers(
  ordering: { items: (OrderedItem | undefined)[]; landmark: Ordering['landmark'] },
  toc: TocBuilder,
  chunkSize: number,
): Generator<MemberPlan> {
  let parts: Part[] = [];
  let size = 0;
  let index = 0;
  const append = (p: Part): void => {
    const n = partLength(p);
    if (n === 0) return;
    parts.push(p);
    size += n;
  };
  function* close(): Generator<MemberPlan> {
    if (size === 0) return;
    const member = { index: index++, parts, size };
    parts = [];
    size = 0;
    yield member;
  }
  function* payload(file: TocEntryJson, fileSize: number, source: (off: number, len: number) => Part): Generator<MemberPlan> {
    let chunkEntry = file;
    for (let written = 0; written < fileSize;) {
      yield* close();
      const len = Math.min(chunkSize, fileSize - written);
      if (written > 0) chunkEntry = toc.addChunk(file.name);
      toc.setMember(chunkEntry, index);
      if (written > 0) chunkEntry.chunkOffset = written;
      // Like the reference: the size is explicit except on a last chunk shorter than chunkSize.
      if (fileSize - written >= chunkSize) chunkEntry.chunkSize = len;
      const part = source(written, len);
      if (part.kind !== 'zero') part.chunk = { entry: chunkEntry, file, first: written === 0, last: written + len === fileSize };
      append(part);
      written += len;
    }
    append({ kind: 'zero', length: paddedSize(fileSize) - fileSize });
  }

  const { items } = ordering;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    items[i] = undefined; // laid out: its index entry is no longer needed
    if (item === undefined) continue;
    if (item === LANDMARK) {
      append({ kind: 'bytes', bytes: headerCodec.encode({ name: ordering.landmark, mode: 0, uid: 0, gid: 0, size: 1, mtime: new Date(0), type: 'file' })! });
      const entry = toc.addHeader({
        name: ordering.landmark, typeflag: '0', mode: 0, uid: 0, gid: 0, size: 1, mtime: 0,
        linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0, xattrs: new Map(),
      }, 'reg');
      yield* payload(entry, 1, () => ({ kind: 'bytes', bytes: Buffer.of(LANDMARK_CONTENTS) }));
      continue;
    }
    const e: TarEntry = item;
    const type = TYPE_BY_FLAG[e.header.typeflag];
    if (!type) {
      throw new EstargzError('INVALID_TAR', `tar entry ${JSON.stringify(e.header.name)} at offset ${e.headerOffset} has type ${JSON.stringify(e.header.typeflag)}, which eStargz cannot hold`);
    }
    // The entry's own header blocks, copied verbatim (PAX and GNU long-name blocks included).
    append({ kind: 'file', offset: e.headerOffset, length: e.dataOffset - e.headerOffset });
    const entry = toc.addHeader(e.header, type);
    if (type !== 'reg') continue;
    if (e.payloadSize === 0) entry.digest = EMPTY_DIGEST;
    else yield* payload(entry, e.payloadSize, (off, len) => ({ kind: 'file', offset: e.dataOffset + off, length: len }));
  }
  yield* close();
}
