import { EstargzError } from '../errors.js';
import { headerCodec, type DecodedHeader } from './header-codec.js';

/**
 * A push parser for tar streams that reports, for every entry, its parsed
 * header and where its header blocks and payload sit in the stream.
 *
 * The 512-byte header blocks are decoded with tar-stream's header codec. The
 * entry walk is ours because tar-stream's extractor applies only path,
 * linkpath and size from PAX records (uid, gid, uname, gname and mtime from
 * PAX are lost), decodes PAX values as UTF-8 (which corrupts binary xattrs),
 * and does not expose byte positions, which the converter needs to copy each
 * entry's header bytes verbatim.
 */
export interface TarHeader {
  /** Name after PAX / GNU long-name records are applied; not normalized. */
  name: string;
  /** Normalized type flag: '0' reg, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo. */
  typeflag: string;
  /** Raw mode field (may include S_IF* bits). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Unix seconds, may be fractional from PAX. */
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** From PAX `SCHILY.xattr.*` records, values byte-exact. */
  xattrs: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /** Stream offset of the entry's first block (an extension header, if any). */
  headerOffset: number;
  /** Stream offset of the payload (right after the last header block). */
  dataOffset: number;
  /** Payload bytes that follow the header (0 for header-only types). */
  payloadSize: number;
  /** Stream offset after the payload's padding. */
  endOffset: number;
}

const BLOCK = 512;
const HEADER_ONLY_TYPES = new Set(['1', '2', '3', '4', '5', '6']);
const XATTR_PREFIX = 'SCHILY.xattr.';

export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

type PaxRecords = Map<string, Buffer>;

/** Parses PAX extended header records ("%d %s=%s\n"), keeping values as bytes. */
export function parsePaxRecords(data: Buffer, at: number): PaxRecords {
  const out: PaxRecords = new Map();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // padding
    const space = data.indexOf(0x20, pos);
    const len = space < 0 ? NaN : Number(data.toString('latin1', pos, space));
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new EstargzError('INVALID_TAR', `malformed PAX record at stream offset ${at + pos}`);
    }
    const record = data.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new EstargzError('INVALID_TAR', `PAX record without "=" at stream offset ${at + pos}`);
    out.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

function normalizeTypeflag(byte: number, name: string): string {
  if (byte === 0) return name.endsWith('/') ? '5' : '0';
  const flag = String.fromCharCode(byte);
  return flag === '7' ? '0' : flag; // contiguous files are regular files
}

function applyPax(h: TarHeader, pax: PaxRecords, at: number): void {
  const num = (key: string, v: Buffer): number => {
    const n = Number(v.toString('latin1'));
    if (!Number.isFinite(n)) throw new EstargzError('INVALID_TAR', `PAX record ${key}=${v.toString('latin1')} is not a number (entry at stream offset ${at})`);
    return n;
  };
  for (const [key, value] of pax) {
    switch (key) {
      case 'path': h.name = value.toString('utf8'); break;
      case 'linkpath': h.linkname = value.toString('utf8'); break;
      case 'size': h.size = num(key, value); break;
      case 'uid': h.uid = num(key, value); break;
      case 'gid': h.gid = num(key, value); break;
      case 'uname': h.uname = value.toString('utf8'); break;
      case 'gname': h.gname = value.toString('utf8'); break;
      case 'mtime': h.mtime = num(key, value); break;
      default:
        if (key.startsWith(XATTR_PREFIX)) h.xattrs.set(key.slice(XATTR_PREFIX.length), value);
    }
  }
}

function cString(data: Buffer): string {
  const nul = data.indexOf(0);
  return data.toString('utf8', 0, nul < 0 ? data.length : nul);
}

export class TarParser {
  /** Absolute stream offset of the first byte not yet consumed. */
  private pos = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes to skip (payload + padding of the current entry). */
  private skip = 0;
  /** Extension header being collected: its type and the bytes still wanted. */
  private ext: { type: string; size: number; padded: number } | null = null;
  private entryStart = -1;
  private pax: PaxRecords | null = null;
  private globalPax: PaxRecords = new Map();
  private longName: string | null = null;
  private longLink: string | null = null;
  private finished = false;

  get done(): boolean {
    return this.finished;
  }

  /** Stream offset where the end-of-archive marker starts, once seen. */
  endOfArchive = -1;

  push(chunk: Buffer): TarEntry[] {
    const out: TarEntry[] = [];
    let off = 0;
    while (off < chunk.length && !this.finished) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        this.pos += n;
        off += n;
        continue;
      }
      const want = this.ext ? this.ext.padded : BLOCK;
      const n = Math.min(want - this.pendingBytes, chunk.length - off);
      this.pending.push(chunk.subarray(off, off + n));
      this.pendingBytes += n;
      off += n;
      if (this.pendingBytes < want) break;
      const block = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      const blockStart = this.pos;
      this.pending = [];
      this.pendingBytes = 0;
      this.pos += want;
      const entry = this.ext ? this.finishExtension(block) : this.onHeaderBlock(block, blockStart);
      if (entry) out.push(entry);
    }
    return out;
  }

  /** Call at end of input: throws if the stream stopped inside an entry. */
  end(): void {
    if (this.finished) return;
    if (this.skip > 0 || this.pendingBytes > 0 || this.ext || this.entryStart >= 0) {
      throw new EstargzError('INVALID_TAR', `tar stream is truncated at offset ${this.pos + this.pendingBytes}`);
    }
    // A stream without the end-of-archive blocks is accepted, as GNU tar does.
    this.endOfArchive = this.pos;
    this.finished = true;
  }

  private finishExtension(block: Buffer): TarEntry | null {
    const { type, size } = this.ext!;
    const data = block.subarray(0, size);
    this.ext = null;
    if (type === 'x') this.pax = parsePaxRecords(data, this.pos - block.length);
    else if (type === 'g') this.globalPax = new Map([...this.globalPax, ...parsePaxRecords(data, this.pos - block.length)]);
    else if (type === 'L') this.longName = cString(data);
    else if (type === 'K') this.longLink = cString(data);
    return null;
  }

  private onHeaderBlock(block: Buffer, blockStart: number): TarEntry | null {
    let decoded: DecodedHeader | null;
    try {
      decoded = headerCodec.decode(block, 'utf-8', true);
    } catch (err) {
      throw new EstargzError('INVALID_TAR', `invalid tar header at stream offset ${blockStart}: ${(err as Error).message}`);
    }
    if (decoded === null) {
      // A zero block: the end-of-archive marker.
      if (this.entryStart >= 0) throw new EstargzError('INVALID_TAR', `zero block inside an entry at stream offset ${blockStart}`);
      this.endOfArchive = blockStart;
      this.finished = true;
      return null;
    }
    if (this.entryStart < 0) this.entryStart = blockStart;
    const rawFlag = block[156] ?? 0;
    const flag = String.fromCharCode(rawFlag);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      const size = decoded.size ?? 0;
      if (size > 64 << 20) throw new EstargzError('INVALID_TAR', `extension header of ${size} bytes at stream offset ${blockStart} is too large`);
      this.ext = { type: flag, size, padded: paddedSize(size) };
      if (size === 0) return this.finishExtension(Buffer.alloc(0));
      return null;
    }

    const header: TarHeader = {
      name: decoded.name,
      typeflag: normalizeTypeflag(rawFlag, decoded.name),
      mode: decoded.mode ?? 0,
      uid: decoded.uid ?? 0,
      gid: decoded.gid ?? 0,
      size: decoded.size ?? 0,
      mtime: decoded.mtime ? decoded.mtime.getTime() / 1000 : 0,
      linkname: decoded.linkname ?? '',
      uname: decoded.uname ?? '',
      gname: decoded.gname ?? '',
      devmajor: decoded.devmajor ?? 0,
      devminor: decoded.devminor ?? 0,
      xattrs: new Map(),
    };
    if (this.globalPax.size) applyPax(header, this.globalPax, blockStart);
    if (this.pax) applyPax(header, this.pax, blockStart);
    if (this.longName !== null) header.name = this.longName;
    if (this.longLink !== null) header.linkname = this.longLink;
    if (!Number.isSafeInteger(header.size) || header.size < 0) {
      throw new EstargzError('INVALID_TAR', `entry ${JSON.stringify(header.name)} at stream offset ${blockStart} has invalid size ${header.size}`);
    }
    const payloadSize = HEADER_ONLY_TYPES.has(header.typeflag) ? 0 : header.size;
    const entry: TarEntry = {
      header,
      headerOffset: this.entryStart,
      dataOffset: this.pos,
      payloadSize,
      endOffset: this.pos + paddedSize(payloadSize),
    };
    this.skip = paddedSize(payloadSize);
    this.entryStart = -1;
    this.pax = null;
    this.longName = null;
    this.longLink = null;
    return entry;
  }
}
