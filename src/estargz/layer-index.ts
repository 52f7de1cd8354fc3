import { EstargzError } from './errors.js';
import {
  DIGEST_PATTERN,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_ENTRY_TYPES,
  cleanEntryName,
  entryNameProblem,
  parseModtime,
  type TocEntryJson,
  type TocJson,
} from './toc.js';

export type NodeType = 'dir' | 'reg' | 'symlink' | 'char' | 'block' | 'fifo';

/** One chunk of a regular file: where its bytes are in the file and in the blob. */
export interface Chunk {
  /** Offset of the chunk inside its file. */
  fileOffset: number;
  /** Uncompressed length of the chunk. */
  size: number;
  /** Compressed range of the gzip member holding the chunk: [blobOffset, blobEnd). */
  blobOffset: number;
  blobEnd: number;
  /** Uncompressed bytes to skip inside that member before the chunk starts. */
  innerOffset: number;
  /** sha256 of the chunk's uncompressed bytes. */
  digest: string;
}

/** An inode of the layer: hardlinks are several paths for one node. */
export interface LayerNode {
  ino: number;
  /** The first path this node was defined at (normalized, "" for the root). */
  path: string;
  type: NodeType;
  /** Permission bits including suid/sgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  userName: string;
  groupName: string;
  size: number;
  /** Unix seconds. */
  mtime: number;
  /** Symlink target, verbatim. */
  linkName: string;
  devMajor: number;
  devMinor: number;
  xattrs: ReadonlyMap<string, Buffer>;
  /** sha256 of the whole file (regular files). */
  digest: string | undefined;
  chunks: Chunk[];
  /** Names pointing at this node (files), or 2 + subdirectories (dirs). */
  nlink: number;
  /** Directory entries sorted by name (UTF-8 byte order); null for non-dirs. */
  children: Map<string, LayerNode> | null;
  /** True for a parent directory the TOC does not list. */
  implicit: boolean;
}

/** A TOC entry as listed (not a chunk), after name normalization. */
export interface TocRecord {
  path: string;
  entry: TocEntryJson;
  /** The node the path resolves to (a hardlink's target node for hardlinks). */
  node: LayerNode;
}

export interface PrefetchHint {
  /** 'landmark': prefetch [0, end); 'none': the blob asks for no prefetch; 'default': no landmark, use the config. */
  kind: 'landmark' | 'none' | 'default';
  end: number;
}

export interface LayerIndex {
  root: LayerNode;
  /** Every path (hardlinks included) → node. */
  byPath: Map<string, LayerNode>;
  /** TOC entries in TOC order, duplicates removed (the later one wins). */
  records: TocRecord[];
  prefetch: PrefetchHint;
  /** Sum of the sizes of all distinct regular files. */
  totalFileBytes: number;
  nodeCount: number;
}

export interface IndexOptions {
  /** Compressed offset of the TOC member: the end of the last data member. */
  tocOffset: number;
  /** Bounds on what a TOC may ask for (defaults: DEFAULT_TOC_LIMITS). */
  limits?: Partial<TocLimits>;
}

/**
 * Bounds a TOC must keep. They are far above what real layers use, and keep
 * a hostile TOC (one whose digest the manifest vouches for: its author wrote
 * both) from costing unbounded memory, or naming what no filesystem can hold.
 */
export interface TocLimits {
  /** TOC entries, chunk entries included; every chunk of a file is one. */
  maxEntries: number;
  /** UTF-8 bytes of a normalized path (PATH_MAX). */
  maxPathBytes: number;
  /** UTF-8 bytes of one path component (NAME_MAX). */
  maxComponentBytes: number;
  /** Components of a path. */
  maxDepth: number;
  /** Extended attributes of one entry. */
  maxXattrs: number;
  /** UTF-8 bytes of an xattr name (XATTR_NAME_MAX). */
  maxXattrNameBytes: number;
  /** Bytes of an xattr value (XATTR_SIZE_MAX). */
  maxXattrValueBytes: number;
  /** Uncompressed bytes of one chunk: it is decoded into one buffer, and cached whole. */
  maxChunkBytes: number;
}

export const DEFAULT_TOC_LIMITS: Readonly<TocLimits> = {
  maxEntries: 1 << 22,
  maxPathBytes: 4096,
  maxComponentBytes: 255,
  maxDepth: 1024,
  maxXattrs: 1024,
  maxXattrNameBytes: 255,
  maxXattrValueBytes: 64 << 10,
  maxChunkBytes: 1 << 30,
};

/**
 * Most bytes a deflate stream can inflate to per compressed byte: a match of
 * 258 bytes costs at least two bits (a one-bit length code and a one-bit
 * distance code), so 258 × 4 = 1032. A chunk that needs more plain bytes from
 * its member than the member's length × this cannot be decoded from it: the
 * TOC lies about its size, innerOffset, or where the member ends.
 */
export const DEFLATE_MAX_RATIO = 1032;

/** uid, gid, device numbers: 32 bits in the kernel and in FUSE's replies. */
const MAX_ID = 0xffff_ffff;

const MODE_PERM_MASK = 0o7777;

/** Shared by every node without xattrs (nearly all of them): one Map per node is measurable garbage on a large TOC. */
const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();

/** Moves UTF-16 surrogates above the rest of the BMP, so unit order becomes code-point order. */
function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/**
 * Compares names in code-point order, which is UTF-8 byte order (what tar and
 * Go sort by), not JavaScript's UTF-16 order. Allocation-free: index building
 * sorts every directory with it.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function invalid(message: string, path?: string): EstargzError {
  return new EstargzError('INVALID_TOC', message, path === undefined ? {} : { path });
}

function checkCount(entry: TocEntryJson, key: keyof TocEntryJson, path: string): number {
  const v = entry[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(`TOC entry ${JSON.stringify(path)}: "${key}" is ${JSON.stringify(v)}, expected a non-negative integer`, path);
  }
  return v;
}

function checkId(entry: TocEntryJson, key: 'uid' | 'gid' | 'devMajor' | 'devMinor', path: string): number {
  const v = checkCount(entry, key, path);
  if (v > MAX_ID) throw invalid(`TOC entry ${JSON.stringify(path)}: "${key}" is ${v}, over the 32-bit limit`, path);
  return v;
}

function checkString(entry: TocEntryJson, key: keyof TocEntryJson, path: string): string {
  const v = entry[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw invalid(`TOC entry ${JSON.stringify(path)}: "${key}" is not a string`, path);
  return v;
}

function decodeXattrs(entry: TocEntryJson, path: string, limits: TocLimits): ReadonlyMap<string, Buffer> {
  const x = entry.xattrs;
  if (x === undefined || x === null) return NO_XATTRS;
  const at = `TOC entry ${JSON.stringify(path)}`;
  if (typeof x !== 'object' || Array.isArray(x)) throw invalid(`${at}: "xattrs" is not an object`, path);
  const names = Object.keys(x);
  if (names.length > limits.maxXattrs) throw invalid(`${at}: ${names.length} xattrs, over the limit of ${limits.maxXattrs}`, path);
  if (names.length === 0) return NO_XATTRS;
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(x)) {
    // listxattr replies are NUL-separated names: a NUL inside one would split it.
    if (k === '' || k.includes('\0') || Buffer.byteLength(k) > limits.maxXattrNameBytes) {
      throw invalid(`${at}: xattr name ${JSON.stringify(k.slice(0, 300))} is empty, has a NUL byte or is over ${limits.maxXattrNameBytes} bytes`, path);
    }
    if (typeof v !== 'string') throw invalid(`${at}: xattr ${JSON.stringify(k)} is not a base64 string`, path);
    const value = Buffer.from(v, 'base64');
    if (value.length > limits.maxXattrValueBytes) {
      throw invalid(`${at}: xattr ${JSON.stringify(k)} is ${value.length} bytes, over the limit of ${limits.maxXattrValueBytes}`, path);
    }
    out.set(k, value);
  }
  return out;
}

/**
 * Normalizes a name from the TOC (entry name or hardlink target) to a path
 * inside the layer, refusing one that escapes it, holds a NUL, or is longer
 * or deeper than a filesystem allows.
 */
function checkedPath(name: string, what: string, at: string, limits: TocLimits): string {
  const problem = entryNameProblem(name);
  if (problem) throw invalid(`TOC entry ${JSON.stringify(at.slice(0, 300))}: ${what} ${problem}`, at);
  const path = cleanEntryName(name);
  if (path === '') return path;
  if (Buffer.byteLength(path) > limits.maxPathBytes) throw invalid(`TOC entry ${JSON.stringify(path.slice(0, 300))}…: ${what} is over ${limits.maxPathBytes} bytes`, path);
  let depth = 0;
  for (const part of path.split('/')) {
    depth++;
    if (Buffer.byteLength(part) > limits.maxComponentBytes) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: ${what} has a component over ${limits.maxComponentBytes} bytes`, path);
    }
  }
  if (depth > limits.maxDepth) throw invalid(`TOC entry ${JSON.stringify(path.slice(0, 300))}…: ${what} is ${depth} levels deep, over the limit of ${limits.maxDepth}`, path);
  return path;
}

/**
 * Builds the filesystem index of a layer from its TOC: path → node, parent
 * directories the TOC leaves implicit, hardlinks resolved to one node, and each
 * file's chunks with the compressed range that holds them. Rejects a TOC whose
 * offsets, sizes or chunk lists are inconsistent, naming the entry.
 */
export function buildLayerIndex(toc: TocJson, opts: IndexOptions): LayerIndex {
  const limits: TocLimits = { ...DEFAULT_TOC_LIMITS, ...opts.limits };
  if (!Array.isArray(toc.entries)) throw invalid('TOC "entries" is not an array');
  if (toc.entries.length > limits.maxEntries) throw invalid(`TOC has ${toc.entries.length} entries, over the limit of ${limits.maxEntries}`);
  let nextIno = 1;
  const newNode = (path: string, type: NodeType, implicit: boolean): LayerNode => ({
    ino: nextIno++,
    path,
    type,
    mode: type === 'dir' ? 0o755 : 0,
    uid: 0,
    gid: 0,
    userName: '',
    groupName: '',
    size: 0,
    mtime: 0,
    linkName: '',
    devMajor: 0,
    devMinor: 0,
    xattrs: NO_XATTRS,
    digest: undefined,
    chunks: [],
    nlink: 1,
    children: type === 'dir' ? new Map() : null,
    implicit,
  });

  const root = newNode('', 'dir', true);
  const byPath = new Map<string, LayerNode>([['', root]]);
  const recordByPath = new Map<string, TocRecord>();
  // Records in TOC order; the ones a later entry replaced are dropped at the end.
  const records: TocRecord[] = [];
  const superseded = new Set<TocRecord>();
  const userNames = new Map<number, string>();
  const groupNames = new Map<number, string>();
  // Every chunk and the path it belongs to, to find where each member ends and
  // to reject two chunks at one place (plain arrays: hashing a key per chunk
  // was a quarter of the index build of a large TOC).
  const chunks: Chunk[] = [];
  const chunkPaths: string[] = [];

  const parentOf = (path: string): { dir: LayerNode; name: string } => {
    const slash = path.lastIndexOf('/');
    const parentPath = slash < 0 ? '' : path.slice(0, slash);
    return { dir: ensureDir(parentPath), name: path.slice(slash + 1) };
  };

  function ensureDir(path: string): LayerNode {
    const existing = byPath.get(path);
    if (existing) {
      if (existing.type !== 'dir') throw invalid(`TOC entry ${JSON.stringify(path)} is used as a directory but is a ${existing.type}`, path);
      return existing;
    }
    const { dir, name } = parentOf(path);
    const node = newNode(path, 'dir', true);
    dir.children!.set(name, node);
    byPath.set(path, node);
    return node;
  }

  /** Places `node` at `path`, replacing whatever was there (a later tar entry wins). */
  function place(path: string, node: LayerNode): void {
    const { dir, name } = parentOf(path);
    const previous = dir.children!.get(name);
    if (previous && previous !== node) {
      // The replaced name no longer counts as a link of a multiply linked file.
      if (previous.type !== 'dir' && previous.nlink > 1) previous.nlink--;
      else forgetSubtree(path, previous);
    }
    dir.children!.set(name, node);
    byPath.set(path, node);
  }

  function forgetSubtree(path: string, node: LayerNode): void {
    if (node.children) {
      for (const [name, child] of node.children) forgetSubtree(`${path}/${name}`, child);
    }
    byPath.delete(path);
    const record = recordByPath.get(path);
    if (record) {
      superseded.add(record);
      recordByPath.delete(path);
    }
  }

  let lastReg: { node: LayerNode; path: string; covered: number } | null = null;
  const finishReg = (): void => {
    if (lastReg && lastReg.covered !== lastReg.node.size) {
      throw invalid(`TOC entry ${JSON.stringify(lastReg.path)}: chunks cover ${lastReg.covered} of ${lastReg.node.size} bytes`, lastReg.path);
    }
    lastReg = null;
  };

  const addChunk = (entry: TocEntryJson, reg: NonNullable<typeof lastReg>, chunkOffset: number, chunkSizeField: number): void => {
    const { node, path } = reg;
    if (chunkOffset !== reg.covered) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: chunk at file offset ${chunkOffset} does not follow the previous chunk, which ends at ${reg.covered} (overlapping or missing chunks)`, path);
    }
    const size = chunkSizeField === 0 ? node.size - chunkOffset : chunkSizeField;
    if (size <= 0 || chunkOffset + size > node.size) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: chunk [${chunkOffset}, ${chunkOffset + size}) is outside the file of ${node.size} bytes`, path);
    }
    if (size > limits.maxChunkBytes) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: chunk at file offset ${chunkOffset} is ${size} bytes, over the limit of ${limits.maxChunkBytes}`, path);
    }
    const offset = checkCount(entry, 'offset', path);
    const innerOffset = checkCount(entry, 'innerOffset', path);
    if (offset >= opts.tocOffset) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: chunk offset ${offset} is outside the blob's payload (TOC at ${opts.tocOffset})`, path);
    }
    let digest = checkString(entry, 'chunkDigest', path);
    if (digest === '' && node.chunks.length === 0 && size === node.size && node.digest) {
      // An unchunked file whose TOC gives only the whole-file digest: the same bytes.
      digest = node.digest;
    }
    // The whole-file digest was checked already: most files are one chunk with the same digest.
    if (digest !== node.digest && !DIGEST_PATTERN.test(digest)) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: chunk at file offset ${chunkOffset} has no valid chunkDigest (${JSON.stringify(digest)})`, path);
    }
    const chunk: Chunk = { fileOffset: chunkOffset, size, blobOffset: offset, blobEnd: 0, innerOffset, digest };
    node.chunks.push(chunk);
    chunks.push(chunk);
    chunkPaths.push(path);
    reg.covered += size;
  };

  for (const raw of toc.entries) {
    if (typeof raw !== 'object' || raw === null) throw invalid('TOC entry is not an object');
    const entry = raw as TocEntryJson;
    if (typeof entry.name !== 'string') throw invalid(`TOC entry has no "name": ${JSON.stringify(entry).slice(0, 200)}`);
    if (typeof entry.type !== 'string' || !TOC_ENTRY_TYPES.has(entry.type)) {
      throw invalid(`TOC entry ${JSON.stringify(entry.name)}: unknown type ${JSON.stringify(entry.type)}`, entry.name);
    }
    const path = checkedPath(entry.name, 'name', entry.name, limits);

    if (entry.type === 'chunk') {
      if (!lastReg) throw invalid(`TOC entry ${JSON.stringify(entry.name)}: "chunk" entry does not follow a regular file`, path);
      // Writers repeat the file's name on its chunk entries: another name means the list is mixed up.
      if (path !== '' && path !== lastReg.path) {
        throw invalid(`TOC entry ${JSON.stringify(path)}: "chunk" entry follows the regular file ${JSON.stringify(lastReg.path)}`, path);
      }
      addChunk(entry, lastReg, checkCount(entry, 'chunkOffset', path), checkCount(entry, 'chunkSize', path));
      continue;
    }
    finishReg();

    const uid = checkId(entry, 'uid', path);
    const gid = checkId(entry, 'gid', path);
    let userName = checkString(entry, 'userName', path);
    let groupName = checkString(entry, 'groupName', path);
    if (userName) userNames.set(uid, userName);
    else userName = userNames.get(uid) ?? '';
    if (groupName) groupNames.set(gid, groupName);
    else groupName = groupNames.get(gid) ?? '';

    const replaced = byPath.get(path);
    if (replaced) {
      // A path listed twice: the later entry wins (implicit parents have no record).
      const previous = recordByPath.get(path);
      if (previous) superseded.add(previous);
    }

    const mtime = parseModtime(checkString(entry, 'modtime', path));
    if (Number.isNaN(mtime)) throw invalid(`TOC entry ${JSON.stringify(path)}: modtime ${JSON.stringify(entry.modtime)} is not an RFC 3339 time`, path);

    let node: LayerNode;
    if (entry.type === 'hardlink') {
      const target = checkedPath(checkString(entry, 'linkName', path), 'hardlink target', path, limits);
      if (target === path) throw invalid(`TOC entry ${JSON.stringify(path)}: hardlink to itself`, path);
      const targetNode = byPath.get(target);
      if (!targetNode || targetNode === root) {
        throw invalid(`TOC entry ${JSON.stringify(path)}: hardlink target ${JSON.stringify(entry.linkName)} is not an earlier entry`, path);
      }
      if (targetNode.type === 'dir') throw invalid(`TOC entry ${JSON.stringify(path)}: hardlink to directory ${JSON.stringify(target)}`, path);
      if (path === '') throw invalid('TOC entry for the root directory is a hardlink', path);
      node = targetNode;
      node.nlink++;
      place(path, node);
    } else {
      const type = entry.type as NodeType;
      const existing = replaced;
      if (path === '' && type !== 'dir') throw invalid(`TOC entry ${JSON.stringify(entry.name)} for the root directory is a ${type}`, path);
      if (existing && existing.type === 'dir' && type === 'dir') {
        // An explicit directory entry defines attributes even after its children.
        node = existing;
        node.implicit = false;
      } else {
        node = newNode(path, type, false);
        if (path === '') throw invalid('unreachable: root replaced');
        place(path, node);
      }
      node.mode = checkCount(entry, 'mode', path) & MODE_PERM_MASK;
      node.uid = uid;
      node.gid = gid;
      node.userName = userName;
      node.groupName = groupName;
      node.mtime = mtime;
      node.xattrs = decodeXattrs(entry, path, limits);
      if (type === 'symlink') node.linkName = checkString(entry, 'linkName', path);
      if (type === 'char' || type === 'block') {
        node.devMajor = checkId(entry, 'devMajor', path);
        node.devMinor = checkId(entry, 'devMinor', path);
      }
      if (type === 'reg') {
        node.size = checkCount(entry, 'size', path);
        const digest = checkString(entry, 'digest', path);
        if (digest && !DIGEST_PATTERN.test(digest)) throw invalid(`TOC entry ${JSON.stringify(path)}: digest ${JSON.stringify(digest)} is not a sha256 digest`, path);
        node.digest = digest || undefined;
        lastReg = { node, path, covered: 0 };
        if (node.size > 0) {
          addChunk(entry, lastReg, checkCount(entry, 'chunkOffset', path), checkCount(entry, 'chunkSize', path));
        }
      }
    }
    const record: TocRecord = { path, entry, node };
    recordByPath.set(path, record);
    records.push(record);
  }
  finishReg();
  setMemberEnds(chunks, chunkPaths, opts.tocOffset);

  let totalFileBytes = 0;
  let nodeCount = 0;
  // Only a hardlinked file is at several paths: count it once.
  const visited = new Set<LayerNode>();
  for (const node of byPath.values()) {
    if (node.nlink > 1 && node.type !== 'dir') {
      if (visited.has(node)) continue;
      visited.add(node);
    }
    nodeCount++;
    if (node.type === 'reg') totalFileBytes += node.size;
    if (node.children) {
      // Tars are usually in name order already: re-sort only when they are not.
      let inOrder = true;
      let prev: string | undefined;
      let subdirs = 0;
      for (const [name, child] of node.children) {
        if (prev !== undefined && compareNames(prev, name) > 0) inOrder = false;
        if (child.type === 'dir') subdirs++;
        prev = name;
      }
      if (!inOrder) node.children = new Map([...node.children.entries()].sort((a, b) => compareNames(a[0], b[0])));
      node.nlink = 2 + subdirs;
    }
  }

  const kept = superseded.size ? records.filter((r) => !superseded.has(r)) : records;
  return { root, byPath, records: kept, prefetch: prefetchHint(root), totalFileBytes, nodeCount };
}

/**
 * Sets each chunk's `blobEnd`: a member ends where the next member starts, and
 * the last one at the TOC. Rejects two chunks at the same place (blob offset
 * and inner offset), naming the later entry; two chunks of one member whose
 * plain ranges overlap; and a chunk that needs more plain bytes than its
 * member can inflate to. Chunks are nearly always listed in blob order
 * already; they are sorted (by index) only when they are not.
 */
function setMemberEnds(chunks: readonly Chunk[], paths: readonly string[], tocOffset: number): void {
  const before = (a: Chunk, b: Chunk): number => a.blobOffset - b.blobOffset || a.innerOffset - b.innerOffset;
  let order: number[] | null = null;
  for (let i = 1; i < chunks.length; i++) {
    if (before(chunks[i - 1]!, chunks[i]!) > 0) {
      order = chunks.map((_, k) => k).sort((a, b) => before(chunks[a]!, chunks[b]!) || a - b);
      break;
    }
  }
  const at = (k: number): number => (order ? order[k]! : k);
  let nextStart = tocOffset;
  let groupOffset = -1;
  for (let k = chunks.length - 1; k >= 0; k--) {
    const c = chunks[at(k)]!;
    if (k + 1 < chunks.length) {
      const next = chunks[at(k + 1)]!;
      if (before(c, next) === 0) {
        const later = Math.max(at(k), at(k + 1));
        throw invalid(`TOC entry ${JSON.stringify(paths[later])}: chunk at blob offset ${c.blobOffset} (inner offset ${c.innerOffset}) duplicates another chunk's offset`, paths[later]);
      }
      if (c.blobOffset === next.blobOffset && c.innerOffset + c.size > next.innerOffset) {
        throw invalid(`TOC entry ${JSON.stringify(paths[at(k)])}: chunk at blob offset ${c.blobOffset}, inner range [${c.innerOffset}, ${c.innerOffset + c.size}), overlaps the chunk of ${JSON.stringify(paths[at(k + 1)])} at inner offset ${next.innerOffset}`, paths[at(k)]);
      }
    }
    if (c.blobOffset !== groupOffset) {
      if (groupOffset >= 0) nextStart = groupOffset;
      groupOffset = c.blobOffset;
    }
    c.blobEnd = nextStart;
    const memberBytes = c.blobEnd - c.blobOffset;
    if (c.innerOffset + c.size > memberBytes * DEFLATE_MAX_RATIO) {
      throw invalid(`TOC entry ${JSON.stringify(paths[at(k)])}: chunk at file offset ${c.fileOffset} needs ${c.innerOffset + c.size} plain bytes (inner offset ${c.innerOffset} + size ${c.size}) from a member of ${memberBytes} bytes at blob offset ${c.blobOffset}, more than deflate can inflate it to`, paths[at(k)]);
    }
  }
}

function prefetchHint(root: LayerNode): PrefetchHint {
  const children = root.children!;
  const landmark = children.get(PREFETCH_LANDMARK);
  if (landmark && landmark.type === 'reg') {
    return { kind: 'landmark', end: landmark.chunks[0]?.blobOffset ?? 0 };
  }
  if (children.has(NO_PREFETCH_LANDMARK)) return { kind: 'none', end: 0 };
  return { kind: 'default', end: 0 };
}
