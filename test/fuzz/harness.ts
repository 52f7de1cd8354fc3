import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import type { BlobFetcher } from '../../src/engine/chunk-loader.js';
import { DEFAULT_CONFIG, engineOptions } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import type { EngineLayer } from '../../src/engine/layer.js';
import { estargzContent } from '../../src/engine/layer.js';
import type { Decoder } from '../../src/estargz/chunk.js';
import { isEstargzError } from '../../src/estargz/errors.js';
import { readFileChunks } from '../../src/estargz/file-chunks.js';
import { encodeFooter } from '../../src/estargz/footer.js';
import type { LayerNode } from '../../src/estargz/layer-index.js';
import { openEstargz, type EstargzBlob } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { headerCodec } from '../../src/estargz/tar/header-codec.js';
import { TOC_TAR_NAME, sha256Digest, type TocJson } from '../../src/estargz/toc.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { loadFixture } from '../../testkit/fixtures.js';
import { expectedTree, makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { createLogger } from '../../src/log/logger.js';
import { createTelemetry, type Telemetry } from '../../src/metrics/telemetry.js';

/**
 * The fuzz harness shared by test/fuzz/format.test.ts (a few hundred cases,
 * fixed seed, in CI) and scripts/fuzz.ts (`npm run fuzz -- --cases N --seed S`).
 *
 * A case is a real eStargz blob (a reference-made fixture, one made by our
 * converter, or a hand-made one whose files share a gzip member), mutated:
 * TOC JSON edits (re-encoded, and opened with the digest of the *edited* TOC,
 * as an image author who lies would annotate it), then byte edits anywhere
 * (footer, TOC member, chunk data), opened with the TOC digest the manifest
 * would carry. The property: open either rejects with an EstargzError, or
 * every file read (format path: decodeChunk through readFileChunks; engine:
 * EngineLayer.readFile with and without the memory cache, with the worker
 * pool, with a cache already holding the genuine layer's chunks) returns
 * exactly the bytes its verified chunks hold, or fails with an error; never
 * an unhandled rejection or exception, never a hang, never short, padded or
 * unverified bytes.
 */


/** The engine's retries keep their count but not their back-off: the properties do not depend on waiting, and a corrupt case retries every chunk. */
export const FUZZ_TUNING = { verifyRetryWaitMs: 0 };

export const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A real blob to mutate, and what its files really hold. */
export interface Base {
  name: string;
  blob: Buffer;
  tocOffset: number;
  toc: TocJson;
  tocDigest: string;
  /** Path (every name of a regular file, hardlinks included) → sha256 of its real content. */
  truth: Map<string, string>;
}

const pad512 = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

/** A TOC member: a gzip member holding the tar entry stargz.index.json and the end-of-archive blocks. */
export function tocMember(json: Buffer): Buffer {
  const header = headerCodec.encode({ name: TOC_TAR_NAME, mode: 0o644, uid: 0, gid: 0, size: json.length, mtime: new Date(0), type: 'file' })!;
  return gzipSync(Buffer.concat([header, pad512(json), Buffer.alloc(1024)]));
}

/** The blob with its TOC replaced: same payload, new TOC member, footer pointing at it. */
export function withToc(base: Base, json: Buffer): Buffer {
  return Buffer.concat([base.blob.subarray(0, base.tocOffset), tocMember(json), encodeFooter(base.tocOffset)]);
}

async function convert(spec: SpecEntry[], chunkSize: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  await convertLayer(Readable.from([await makeLayerTar(spec)]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), { chunkSize, level: 6 });
  return Buffer.concat(parts);
}

async function baseOf(name: string, blob: Buffer, shaOf: (path: string, node: LayerNode) => string | undefined): Promise<Base> {
  const opened = await openEstargz(new BufferSource(blob));
  const truth = new Map<string, string>();
  for (const [path, node] of opened.index.byPath) {
    if (node.type !== 'reg') continue;
    const hex = shaOf(path, node);
    if (hex === undefined) throw new Error(`fuzz base ${name}: no known content for ${path}`);
    truth.set(path, 'sha256:' + hex);
  }
  return { name, blob, tocOffset: opened.footer.tocOffset, toc: opened.toc, tocDigest: opened.tocDigest, truth };
}

/**
 * Two small files in one gzip member (innerOffset), then a file in a member
 * of its own: the layout the reference writer uses for small files, which our
 * converter does not produce.
 */
function sharedMemberBlob(): { blob: Buffer; contents: Map<string, Buffer> } {
  const a = Buffer.from('first small file\n');
  const b = Buffer.from('second small file, same member\n');
  const c = randomBytes(3000, 7);
  const m0 = gzipSync(Buffer.concat([a, b]));
  const m1 = gzipSync(c);
  const toc: TocJson = {
    version: 1,
    entries: [
      { name: 'small/', type: 'dir', mode: 0o755 },
      { name: 'small/a', type: 'reg', size: a.length, offset: 0, digest: sha(a), chunkDigest: sha(a) },
      { name: 'small/b', type: 'reg', size: b.length, offset: 0, innerOffset: a.length, digest: sha(b), chunkDigest: sha(b) },
      { name: 'c', type: 'reg', size: c.length, offset: m0.length, chunkSize: 1000, digest: sha(c), chunkDigest: sha(c.subarray(0, 1000)) },
      { name: 'c', type: 'chunk', offset: m0.length, innerOffset: 1000, chunkOffset: 1000, chunkSize: 1000, chunkDigest: sha(c.subarray(1000, 2000)) },
      { name: 'c', type: 'chunk', offset: m0.length, innerOffset: 2000, chunkOffset: 2000, chunkDigest: sha(c.subarray(2000)) },
      { name: 'small/hard', type: 'hardlink', linkName: 'small/a' },
    ],
  };
  const json = Buffer.from(JSON.stringify(toc, null, '\t'));
  const tocOffset = m0.length + m1.length;
  const blob = Buffer.concat([m0, m1, tocMember(json), encodeFooter(tocOffset)]);
  return { blob, contents: new Map([['small/a', a], ['small/b', b], ['c', c], ['small/hard', a]]) };
}

/** Files for a converter-made base: several chunks per file, identical chunks in different files, a chunk whose bytes are another file's whole content. */
function madeSpec(): SpecEntry[] {
  const big = randomBytes(20_000, 1);
  return [
    { name: 'a/', type: 'directory' },
    { name: 'a/small.txt', type: 'file', content: Buffer.from('hello, small file\n') },
    { name: 'a/big.bin', type: 'file', content: big },
    // The first 4 KiB of big.bin: the same chunk digest as big.bin's first chunk, as a whole file.
    { name: 'a/head.bin', type: 'file', content: big.subarray(0, 4096) },
    // 300 bytes, and a copy: the same digest twice.
    { name: 'b/three-hundred', type: 'file', content: randomBytes(300, 2) },
    { name: 'b/copy', type: 'file', content: randomBytes(300, 2) },
    { name: 'b/zeros', type: 'file', content: Buffer.alloc(40_000) },
    { name: 'b/empty', type: 'file', content: Buffer.alloc(0) },
    { name: 'b/link', type: 'link', linkname: 'a/small.txt' },
    { name: 'b/sym', type: 'symlink', linkname: '../a/big.bin' },
    { name: 'c/deep/er/file', type: 'file', content: Buffer.from('x'.repeat(5000)) },
  ];
}

/** The blobs cases start from. */
export async function loadBases(): Promise<Base[]> {
  const bases: Base[] = [];
  for (const name of ['basic', 'links', 'special', 'prefetch', 'empty-dir']) {
    const { blob, tree } = await loadFixture(name);
    const byPath = new Map(tree.map((e) => [e.path, e.sha256]));
    bases.push(await baseOf(name, blob, (path, node) => byPath.get(path) ?? byPath.get(node.path) ?? undefined));
  }
  const spec = madeSpec();
  const tree = new Map(expectedTree(spec, '.no.prefetch.landmark').map((e) => [e.path, e.sha256]));
  bases.push(await baseOf('made-4k-chunks', await convert(spec, 4096), (path, node) => tree.get(path) ?? tree.get(node.path) ?? undefined));
  const shared = sharedMemberBlob();
  bases.push(await baseOf('shared-member', shared.blob, (path) => {
    const c = shared.contents.get(path);
    return c && sha(c).slice(7);
  }));
  return bases;
}

// ---------------------------------------------------------------------------
// Mutations: plain data, so that a failing case prints as something readable.

const NUM_FIELDS = ['offset', 'size', 'chunkSize', 'chunkOffset', 'innerOffset', 'uid', 'gid', 'mode', 'devMajor', 'devMinor'] as const;
type NumField = typeof NUM_FIELDS[number];
const DIGEST_FIELDS = ['digest', 'chunkDigest'] as const;

export type NumValue =
  | { lit: number | string | null }
  | { delta: number }
  | { scale: number }
  | { from: number };

export type TocOp =
  | { op: 'num'; at: number; field: NumField; value: NumValue }
  | { op: 'digest'; at: number; field: typeof DIGEST_FIELDS[number]; value: { from: number } | { lit: string | null } | { random: string } }
  | { op: 'name'; at: number; value: { prefix: string } | { suffix: string } | { lit: string } | { from: number } }
  | { op: 'linkName'; at: number; value: { lit: string } | { from: number } }
  | { op: 'type'; at: number; value: string | number | null }
  | { op: 'xattrs'; at: number; value: unknown }
  | { op: 'remove'; at: number }
  | { op: 'duplicate'; at: number }
  | { op: 'swap'; at: number; with: number }
  /** Splits a regular file's single chunk in two at `cut` (both chunks lie about where they are). */
  | { op: 'split'; at: number; cut: number }
  /** Appends a chunk entry overlapping the file's last chunk by `back` bytes. */
  | { op: 'overlap'; at: number; back: number }
  | { op: 'top'; value: 'entries-null' | 'entries-missing' | 'entries-object' | 'entries-empty' | 'version-2' };

export type ByteRegion = 'footer' | 'toc' | 'chunks' | 'any';
export type ByteOp =
  | { op: 'xor'; region: ByteRegion; at: number; mask: number }
  | { op: 'overwrite'; region: ByteRegion; at: number; bytes: number[] }
  | { op: 'insert'; region: ByteRegion; at: number; bytes: number[] }
  | { op: 'delete'; region: ByteRegion; at: number; count: number }
  | { op: 'truncate'; count: number };

export interface FuzzCase {
  base: number;
  toc: TocOp[];
  bytes: ByteOp[];
  decoder: Decoder;
  /** Run background fetch (whole-blob gunzip, blob digest and diffID check) on the engine layers. */
  background: boolean;
  /** A sub-range read: [at mod size, + len). */
  range: { at: number; len: number };
}

const numValue: fc.Arbitrary<NumValue> = fc.oneof(
  fc.record({ lit: fc.constantFrom<number | string | null>(0, -1, 1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 1e300, '12', null) }),
  fc.record({ delta: fc.integer({ min: -5000, max: 5000 }) }),
  fc.record({ scale: fc.constantFrom(2, 3, 10, 1000, 3000) }),
  fc.record({ from: fc.nat() }),
);

const tocOp: fc.Arbitrary<TocOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('num' as const), at: fc.nat(), field: fc.constantFrom(...NUM_FIELDS), value: numValue }) },
  { weight: 3, arbitrary: fc.record({
    op: fc.constant('digest' as const), at: fc.nat(), field: fc.constantFrom(...DIGEST_FIELDS),
    value: fc.oneof(
      fc.record({ from: fc.nat() }),
      fc.record({ lit: fc.constantFrom<string | null>('sha256:zz', '', null, 'sha512:00') }),
      fc.record({ random: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => 'sha256:' + Buffer.from(b).toString('hex')) }),
    ),
  }) },
  { weight: 2, arbitrary: fc.record({
    op: fc.constant('name' as const), at: fc.nat(),
    value: fc.oneof(
      fc.record({ prefix: fc.constantFrom('../', '/', './', 'a/../', '../../../', 'x//') }),
      fc.record({ suffix: fc.constantFrom('/', '\u0000', '/..', '/../..', '/.') }),
      fc.record({ lit: fc.constantFrom('', '.', '..', '/', 'x'.repeat(300), 'd/'.repeat(1100), 'stargz.index.json', '.prefetch.landmark') }),
      fc.record({ from: fc.nat() }),
    ),
  }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('linkName' as const), at: fc.nat(), value: fc.oneof(fc.record({ lit: fc.constantFrom('', '../etc/passwd', '/abs', '.') }), fc.record({ from: fc.nat() })) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('type' as const), at: fc.nat(), value: fc.constantFrom<string | number | null>('dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk', 'socket', 7, null) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('xattrs' as const), at: fc.nat(), value: fc.constantFrom<unknown>({ 'user.x': 'AA==' }, { 'a\u0000b': '' }, [], 'str', { k: 7 }, null, { 'user.big': 'A'.repeat(100_000) }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('duplicate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('swap' as const), at: fc.nat(), with: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('split' as const), at: fc.nat(), cut: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('overlap' as const), at: fc.nat(), back: fc.integer({ min: 0, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('top' as const), value: fc.constantFrom('entries-null' as const, 'entries-missing' as const, 'entries-object' as const, 'entries-empty' as const, 'version-2' as const) }) },
);

const region = fc.constantFrom<ByteRegion>('footer', 'toc', 'chunks', 'chunks', 'any');
const someBytes = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 });
const byteOp: fc.Arbitrary<ByteOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('xor' as const), region, at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('overwrite' as const), region, at: fc.nat(), bytes: someBytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), region, at: fc.nat(), bytes: someBytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), region, at: fc.nat(), count: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), count: fc.integer({ min: 1, max: 200 }) }) },
);

/** Cases: TOC edits, byte edits, or both (each list may be empty; an unmutated blob must read back as its tar). */
export function caseArbitrary(baseCount: number, opts: { background?: boolean } = {}): fc.Arbitrary<FuzzCase> {
  return fc.record({
    base: fc.nat({ max: baseCount - 1 }),
    toc: fc.oneof({ weight: 3, arbitrary: fc.array(tocOp, { minLength: 1, maxLength: 4 }) }, { weight: 2, arbitrary: fc.constant<TocOp[]>([]) }),
    bytes: fc.oneof({ weight: 3, arbitrary: fc.constant<ByteOp[]>([]) }, { weight: 2, arbitrary: fc.array(byteOp, { minLength: 1, maxLength: 3 }) }),
    decoder: fc.constantFrom<Decoder>('zlib', 'pako'),
    background: opts.background === undefined ? fc.boolean() : fc.constant(opts.background),
    range: fc.record({ at: fc.nat(), len: fc.nat({ max: 70_000 }) }),
  });
}

type Entry = Record<string, unknown>;

function numOf(entries: Entry[], from: number, field: string, own: unknown): unknown {
  const others = entries.filter((e) => typeof e[field] === 'number');
  return others.length ? others[from % others.length]![field] : own;
}

/** Applies TOC edits to a deep copy of the TOC document. */
export function applyTocOps(toc: TocJson, ops: readonly TocOp[]): unknown {
  const doc = JSON.parse(JSON.stringify(toc)) as { version: unknown; entries?: unknown };
  for (const op of ops) {
    if (op.op === 'top') {
      if (op.value === 'entries-null') doc.entries = null;
      else if (op.value === 'entries-missing') delete doc.entries;
      else if (op.value === 'entries-object') doc.entries = { ...(Array.isArray(doc.entries) ? doc.entries : []) };
      else if (op.value === 'entries-empty') doc.entries = [];
      else doc.version = 2;
      continue;
    }
    if (!Array.isArray(doc.entries) || doc.entries.length === 0) continue;
    const entries = doc.entries as Entry[];
    const i = op.at % entries.length;
    const e = entries[i]!;
    if (typeof e !== 'object' || e === null) continue;
    switch (op.op) {
      case 'num': {
        const own = e[op.field];
        const v = op.value;
        if ('lit' in v) e[op.field] = v.lit;
        else if ('delta' in v) e[op.field] = (typeof own === 'number' ? own : 0) + v.delta;
        else if ('scale' in v) e[op.field] = (typeof own === 'number' ? own : 1) * v.scale;
        else e[op.field] = numOf(entries, v.from, op.field, own);
        break;
      }
      case 'digest': {
        const v = op.value;
        if ('lit' in v) {
          if (v.lit === null) delete e[op.field];
          else e[op.field] = v.lit;
        } else if ('random' in v) {
          e[op.field] = v.random;
        } else {
          const others = entries.filter((x) => typeof x.chunkDigest === 'string');
          if (others.length) e[op.field] = others[v.from % others.length]!.chunkDigest;
        }
        break;
      }
      case 'name': {
        const name = typeof e.name === 'string' ? e.name : '';
        const v = op.value;
        if ('prefix' in v) e.name = v.prefix + name;
        else if ('suffix' in v) e.name = name + v.suffix;
        else if ('lit' in v) e.name = v.lit;
        else e.name = entries[v.from % entries.length]!.name;
        break;
      }
      case 'linkName':
        e.linkName = 'lit' in op.value ? op.value.lit : entries[op.value.from % entries.length]!.name;
        break;
      case 'type':
        e.type = op.value;
        break;
      case 'xattrs':
        e.xattrs = op.value;
        break;
      case 'remove':
        entries.splice(i, 1);
        break;
      case 'duplicate':
        entries.splice(i + 1, 0, JSON.parse(JSON.stringify(e)) as Entry);
        break;
      case 'swap': {
        const j = op.with % entries.length;
        [entries[i], entries[j]] = [entries[j]!, entries[i]!];
        break;
      }
      case 'split': {
        const size = typeof e.size === 'number' ? e.size : 0;
        if (e.type !== 'reg' || size < 2) break;
        const cut = 1 + (op.cut % (size - 1));
        e.chunkSize = cut;
        entries.splice(i + 1, 0, { name: e.name, type: 'chunk', offset: e.offset, chunkOffset: cut, chunkSize: size - cut, chunkDigest: e.chunkDigest });
        break;
      }
      case 'overlap': {
        // The file's last chunk entry (the reg itself, or its last "chunk"), copied back by `back` bytes.
        if (e.type !== 'reg') break;
        let last = i;
        while (entries[last + 1]?.type === 'chunk') last++;
        const l = entries[last]!;
        const start = typeof l.chunkOffset === 'number' ? l.chunkOffset : 0;
        entries.splice(last + 1, 0, { ...l, type: 'chunk', chunkOffset: Math.max(0, start - op.back) });
        break;
      }
    }
  }
  return doc;
}

function regionOf(blob: Buffer, base: Base, r: ByteRegion): [number, number] {
  const footerStart = Math.max(0, blob.length - 51);
  switch (r) {
    case 'footer': return [footerStart, blob.length];
    case 'toc': return [Math.min(base.tocOffset, footerStart), footerStart];
    case 'chunks': return [0, Math.min(base.tocOffset, blob.length)];
    case 'any': return [0, blob.length];
  }
}

export function applyByteOps(blob: Buffer, base: Base, ops: readonly ByteOp[]): Buffer {
  let b = Buffer.from(blob);
  for (const op of ops) {
    if (op.op === 'truncate') {
      b = b.subarray(0, Math.max(0, b.length - op.count));
      continue;
    }
    const [start, end] = regionOf(b, base, op.region);
    if (end <= start) continue;
    const at = start + (op.at % (end - start));
    if (op.op === 'xor') b[at] = b[at]! ^ op.mask;
    else if (op.op === 'overwrite') Buffer.from(op.bytes).copy(b, at);
    else if (op.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from(op.bytes), b.subarray(at)]);
    else b = Buffer.concat([b.subarray(0, at), b.subarray(at + op.count)]);
  }
  return b;
}

/** The blob a case opens, and the TOC digest the manifest annotation would carry for it. */
export function buildCase(bases: readonly Base[], c: FuzzCase): { base: Base; blob: Buffer; tocDigest: string } {
  const base = bases[c.base % bases.length]!;
  let blob = base.blob;
  let tocDigest = base.tocDigest;
  if (c.toc.length) {
    // A lying-but-signed TOC: the author annotates the digest of what they wrote.
    const json = Buffer.from(JSON.stringify(applyTocOps(base.toc, c.toc), null, '\t'));
    tocDigest = sha256Digest(json);
    blob = withToc(base, json);
  }
  if (c.bytes.length) blob = applyByteOps(blob, base, c.bytes);
  return { base, blob, tocDigest };
}

// ---------------------------------------------------------------------------
// Running a case.

export interface FuzzStats {
  cases: number;
  /** Open refused the blob: EstargzError code → count. */
  rejected: Record<string, number>;
  opened: number;
  /** File reads (format path and engine) that returned verified bytes. */
  readsOk: number;
  /** File reads that failed with an error: error code or class → count. */
  readErrors: Record<string, number>;
  /** Cases whose open succeeded and every read returned bytes. */
  openedAllOk: number;
  /** Cases that failed the property; after the first, fast-check only shrinks, and those runs are not counted. */
  findings: number;
}

export function newStats(): FuzzStats {
  return { cases: 0, rejected: {}, opened: 0, readsOk: 0, readErrors: {}, openedAllOk: 0, findings: 0 };
}

function mergeStats(into: FuzzStats, from: FuzzStats): void {
  for (const k of ['cases', 'opened', 'readsOk', 'openedAllOk'] as const) into[k] += from[k];
  for (const k of ['rejected', 'readErrors'] as const) for (const [code, n] of Object.entries(from[k])) into[k][code] = (into[k][code] ?? 0) + n;
}

const bump = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };

/** A finding: what the property forbids. */
export class FuzzFailure extends Error {
  override readonly name = 'FuzzFailure';
}

/** A read or a background fetch of these small blobs takes milliseconds: one that takes this long is stuck. */
const HANG_MS = 5000;

/** Races a promise against a deadline: a case that hangs is a finding, not a stuck run. */
async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FuzzFailure(`${what}: no answer within ${HANG_MS} ms (hang)`)), HANG_MS);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Memory-only fetcher over a buffer (what RemoteBlob gives the engine). */
export function bufferFetcher(blob: Buffer): BlobFetcher {
  return {
    size: blob.length,
    async readRanges(ranges) {
      return ranges.map(({ offset, length }) => {
        if (offset < 0 || length < 0 || offset + length > blob.length) throw new RangeError(`range [${offset}, ${offset + length}) outside the blob of ${blob.length} bytes`);
        return Buffer.from(blob.subarray(offset, offset + length));
      });
    },
  };
}

function errorKey(err: unknown): string {
  if (err instanceof FuzzFailure) throw err;
  if (isEstargzError(err)) return err.code;
  return err instanceof Error ? err.constructor.name : typeof err;
}

/** Errors a read may fail with: the format's own, or the engine's plain Errors (fetch, closed pool). Not TypeError and the like (bugs). */
function checkReadError(err: unknown, where: string): string {
  const key = errorKey(err);
  if (key === 'TypeError' || key === 'RangeError' || key === 'ReferenceError' || key === 'SyntaxError') {
    throw new FuzzFailure(`${where}: read failed with ${key} (a bug, not a verification failure): ${(err as Error).stack ?? String(err)}`);
  }
  return key;
}

/**
 * Checks bytes returned for [offset, offset + length) of `node` against what
 * is known: the chunks' digests (every chunk fully inside the range must hash
 * to its digest), the bytes the format path verified, and, when the TOC is the
 * genuine one, the real content.
 */
function checkBytes(where: string, node: LayerNode, got: Buffer, offset: number, length: number, verified: Buffer | undefined, truth: string | undefined): void {
  const want = Math.max(0, Math.min(node.size, offset + length) - offset);
  if (got.length !== want) {
    throw new FuzzFailure(`${where}: read [${offset}, +${length}) of a ${node.size}-byte file returned ${got.length} bytes, expected ${want} (short or padded)`);
  }
  for (const c of node.chunks) {
    if (c.fileOffset < offset || c.fileOffset + c.size > offset + want) continue;
    const piece = got.subarray(c.fileOffset - offset, c.fileOffset - offset + c.size);
    if (sha(piece) !== c.digest) throw new FuzzFailure(`${where}: chunk at file offset ${c.fileOffset} returned bytes hashing to ${sha(piece)}, not its digest ${c.digest} (unverified bytes)`);
  }
  if (verified && !got.equals(verified.subarray(offset, offset + want))) {
    throw new FuzzFailure(`${where}: bytes differ from the ones the format path verified`);
  }
  if (truth !== undefined && offset === 0 && want === node.size && sha(got) !== truth) {
    throw new FuzzFailure(`${where}: the genuine TOC's file reads as ${sha(got)}, its real content is ${truth}`);
  }
}

/** Distinct regular files of an opened blob, with one path each. */
function regularFiles(es: EstargzBlob): { path: string; node: LayerNode }[] {
  const seen = new Set<LayerNode>();
  const out: { path: string; node: LayerNode }[] = [];
  for (const [path, node] of es.index.byPath) {
    if (node.type !== 'reg' || seen.has(node)) continue;
    seen.add(node);
    out.push({ path, node });
  }
  return out;
}

/** Engines the runner provides: one with the worker pool and no memory cache, kept for the whole run (it has no state between cases). */
export interface RunContext {
  bases: Base[];
  poolEngine: Engine;
  stats: FuzzStats;
  /** Skip the engine whose memory cache holds the genuine layer's chunks (to look past a known finding there). */
  noSharedCache?: boolean;
}

/**
 * The fuzz engines' logger and metrics. Refused chunks log errors by design:
 * thousands of lines would hide the result, so they are off unless asked for
 * (FUZZ_LOG=1, or `npm run fuzz -- --verbose`).
 */
export function fuzzTelemetry(verbose = Boolean(process.env.FUZZ_LOG)): Telemetry {
  return createTelemetry(createLogger(verbose ? 'info' : 'silent'));
}

export async function createPoolEngine(telemetry = fuzzTelemetry()): Promise<Engine> {
  return Engine.create(engineOptions(DEFAULT_CONFIG, { poolThreads: 1, memoryCacheBytes: 0, tuning: FUZZ_TUNING, fetch: { noBackgroundFetch: false, background: { idleMs: 0, runRetryWaitMs: 1, spanRetryWaitMs: 1, maxRuns: 1 } } }), telemetry);
}

function openLayer(engine: Engine, es: EstargzBlob, blob: Buffer, base: Base, tag: string): EngineLayer {
  return engine.openLayer({
    id: `fuzz-${tag}-${Math.random().toString(36).slice(2, 8)}`,
    blobDigest: sha(blob),
    fetcher: bufferFetcher(blob),
    content: estargzContent(es),
  });
}

/** Background fetch to the end (it must settle, whatever the blob holds), then the layer closed. */
async function finishLayer(layer: EngineLayer, background: boolean, where: string): Promise<void> {
  if (background) {
    layer.startBackgroundFetch();
    await within(layer.backgroundDone(), `${where}: background fetch`);
  }
  await layer.close();
}

/**
 * Runs one case; throws a FuzzFailure for a finding. Unhandled rejections and
 * uncaught exceptions while it runs (the daemon would die of them) are findings too.
 */
export async function runCase(ctx: RunContext, c: FuzzCase): Promise<void> {
  const crashes: string[] = [];
  const onRejection = (reason: unknown): void => { crashes.push(`unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}`); };
  const onException = (err: Error): void => { crashes.push(`uncaught exception: ${err.stack}`); };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  let failure: unknown;
  const stats = newStats();
  try {
    await runCaseInner({ ...ctx, stats }, c);
  } catch (err) {
    failure = err;
  }
  if (ctx.stats.findings === 0) mergeStats(ctx.stats, stats);
  // Let late rejections (work nobody awaited) surface before judging the case.
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onException);
  if (crashes.length || failure) ctx.stats.findings++;
  // A crash is the finding even when it also made a read fail or hang.
  if (crashes.length) throw new FuzzFailure(crashes.join('\n') + (failure ? `\nthen: ${(failure as Error).message}` : ''));
  if (failure) throw failure;
}

async function runCaseInner(ctx: RunContext, c: FuzzCase): Promise<void> {
  const { stats } = ctx;
  stats.cases++;
  const { base, blob, tocDigest } = buildCase(ctx.bases, c);
  const source = new BufferSource(blob);
  let es: EstargzBlob;
  try {
    es = await within(openEstargz(source, { tocDigest }), 'open');
  } catch (err) {
    if (err instanceof FuzzFailure) throw err;
    if (!isEstargzError(err)) throw new FuzzFailure(`open failed with a ${errorKey(err)}, not an EstargzError: ${(err as Error).stack ?? String(err)}`);
    bump(stats.rejected, err.code);
    return;
  }
  stats.opened++;
  const genuine = es.tocDigest === base.tocDigest;
  let allOk = true;
  const readOk = (): void => { stats.readsOk++; };
  const readErr = (key: string): void => { allOk = false; bump(stats.readErrors, key); };

  // Format path: every chunk of every file through decodeChunk.
  const files = regularFiles(es);
  const verified = new Map<LayerNode, Buffer>();
  for (const { path, node } of files) {
    const truth = genuine ? base.truth.get(path) : undefined;
    try {
      const parts: Buffer[] = [];
      await within((async () => {
        for await (const { chunk, bytes } of readFileChunks(source, node, path, c.decoder)) {
          if (bytes.length !== chunk.size || sha(bytes) !== chunk.digest) throw new FuzzFailure(`format path: ${path}: chunk at ${chunk.fileOffset} decoded to unverified bytes`);
          parts.push(bytes);
        }
      })(), `format path: ${path}`);
      const whole = Buffer.concat(parts);
      checkBytes(`format path: ${path}`, node, whole, 0, node.size, undefined, truth);
      verified.set(node, whole);
      readOk();
    } catch (err) {
      if (err instanceof FuzzFailure) throw err;
      if (!isEstargzError(err)) throw new FuzzFailure(`format path: ${path}: failed with a ${errorKey(err)}, not an EstargzError: ${(err as Error).stack ?? String(err)}`);
      readErr(err.code);
    }
  }
  if (genuine && !c.bytes.length && !allOk) throw new FuzzFailure('the unmutated blob does not read back');

  // Engine, worker pool, no memory cache.
  await readThroughEngine(ctx.poolEngine, 'pool', es, blob, base, files, verified, genuine, c, readOk, readErr, false);

  // Engine on the main thread with a memory cache that already holds the genuine layer's chunks:
  // a lying TOC naming a genuine chunk's digest gets a cache hit, which must still be its own size.
  if (ctx.noSharedCache) {
    if (allOk) stats.openedAllOk++;
    return;
  }
  const cached = await Engine.create(engineOptions(DEFAULT_CONFIG, { poolThreads: 0, tuning: FUZZ_TUNING, fetch: { noBackgroundFetch: false, background: { idleMs: 0, runRetryWaitMs: 1, spanRetryWaitMs: 1, maxRuns: 1 } } }), fuzzTelemetry());
  try {
    const genuineEs = await openEstargz(new BufferSource(base.blob));
    const good = openLayer(cached, genuineEs, base.blob, base, 'genuine');
    for (const { path, node } of regularFiles(genuineEs)) {
      const got = await within(good.readFile(node, 0, node.size, path), `genuine layer: ${path}`);
      checkBytes(`genuine layer through the engine: ${path}`, node, got, 0, node.size, undefined, base.truth.get(path));
    }
    await good.close();
    await readThroughEngine(cached, 'cached', es, blob, base, files, verified, genuine, c, readOk, readErr, true);
  } finally {
    await cached.close();
  }
  if (allOk) stats.openedAllOk++;
}

async function readThroughEngine(
  engine: Engine, tag: string, es: EstargzBlob, blob: Buffer, base: Base,
  files: { path: string; node: LayerNode }[], verified: Map<LayerNode, Buffer>, genuine: boolean, c: FuzzCase,
  readOk: () => void, readErr: (key: string) => void,
  /** Every read at once (loads in flight are shared between files), or one after the other. */
  concurrent: boolean,
): Promise<void> {
  const layer = openLayer(engine, es, blob, base, tag);
  try {
    await within(layer.prefetch(), `${tag}: prefetch`);
    const reads = files.flatMap(({ path, node }) =>
      ([[0, node.size], [node.size ? c.range.at % node.size : 0, c.range.len]] as const).map(([offset, length]) => async () => {
        const truth = genuine ? base.truth.get(path) : undefined;
        const where = `engine (${tag}${concurrent ? ', concurrent reads' : ''}): ${path}`;
        try {
          const got = await within(layer.readFile(node, offset, length, path), `${where} [${offset}, +${length})`);
          checkBytes(where, node, got, offset, length, verified.get(node), truth);
          readOk();
        } catch (err) {
          readErr(checkReadError(err, where));
        }
      }));
    if (concurrent) {
      const results = await Promise.allSettled(reads.map((read) => read()));
      const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failure) throw failure.reason;
    } else {
      for (const read of reads) await read();
    }
  } finally {
    await finishLayer(layer, c.background, `engine (${tag})`);
  }
}

/** fast-check parameters from the environment (FUZZ_CASES, FUZZ_SEED) or the given defaults. */
export function fuzzParams(defaults: { cases: number; seed: number }): { cases: number; seed: number } {
  const cases = Number(process.env.FUZZ_CASES ?? defaults.cases);
  const seed = Number(process.env.FUZZ_SEED ?? defaults.seed);
  if (!Number.isSafeInteger(cases) || cases <= 0) throw new Error(`FUZZ_CASES=${process.env.FUZZ_CASES} is not a positive integer`);
  if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED=${process.env.FUZZ_SEED} is not an integer`);
  return { cases, seed };
}
