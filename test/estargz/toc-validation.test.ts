import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { decodeChunk } from '../../src/estargz/chunk.js';
import { isEstargzError, type EstargzErrorCode } from '../../src/estargz/errors.js';
import { FOOTER_SIZE, LEGACY_FOOTER_SIZE, encodeFooter, parseFooter } from '../../src/estargz/footer.js';
import { hashFile } from '../../src/estargz/listing.js';
import { openEstargz } from '../../src/estargz/open.js';
import { BufferSource, type RangedSource } from '../../src/estargz/source.js';
import { headerCodec } from '../../src/estargz/tar/header-codec.js';
import type { TocEntryJson } from '../../src/estargz/toc.js';

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const pad512 = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

/** Hand-assembles a blob: payload members, then a TOC member (text, or built from the members' offsets), then a footer. */
function craftBlob(toc: string | ((offsets: number[]) => object), payloads: Buffer[] = [], footer: 'current' | 'legacy' = 'current'): Buffer {
  const members = payloads.map((p) => gzipSync(p));
  const offsets: number[] = [];
  let at = 0;
  for (const m of members) {
    offsets.push(at);
    at += m.length;
  }
  const json = Buffer.from(typeof toc === 'string' ? toc : JSON.stringify(toc(offsets)));
  const header = headerCodec.encode({ name: 'stargz.index.json', mode: 0, uid: 0, gid: 0, size: json.length, mtime: new Date(0), type: 'file' })!;
  const tocMember = gzipSync(Buffer.concat([header, pad512(json), Buffer.alloc(1024)]));
  return Buffer.concat([...members, tocMember, footer === 'current' ? encodeFooter(at) : legacyFooter(at)]);
}
const blobWith = craftBlob;

function legacyFooter(tocOffset: number): Buffer {
  const b = Buffer.alloc(LEGACY_FOOTER_SIZE);
  Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]).copy(b);
  b.writeUInt16LE(22, 10);
  b.write(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 12, 'latin1');
  Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]).copy(b, 34);
  return b;
}

function fileEntry(name: string, content: Buffer, offset: number, extra: Partial<TocEntryJson> = {}): TocEntryJson {
  return { name, type: 'reg', size: content.length, offset, digest: sha(content), chunkDigest: sha(content), ...extra };
}

async function rejectsWith(p: Promise<unknown>, code: EstargzErrorCode, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err) => {
    assert.ok(isEstargzError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

/** Counts range reads, to check what opening a blob costs. */
class CountingSource implements RangedSource {
  reads: [number, number][] = [];
  constructor(private readonly inner: RangedSource) {}
  get size(): number { return this.inner.size; }
  read(offset: number, length: number): Promise<Buffer> {
    this.reads.push([offset, length]);
    return this.inner.read(offset, length);
  }
}

describe('footer', () => {
  test('encode/parse round trip, and the documented byte layout', () => {
    const f = encodeFooter(0x1234);
    assert.equal(f.toString('hex'), '1f8b08040000000000ff1a00534716003030303030303030303030303132333453544152475a010000ffff0000000000000000');
    assert.deepEqual(parseFooter(f, 0x1234 + FOOTER_SIZE + 1), { tocOffset: 0x1234, footerSize: FOOTER_SIZE, legacy: false });
  });

  test('legacy 47-byte footer', async () => {
    const content = Buffer.from('legacy stargz');
    const blob = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!)] }), [content], 'legacy');
    const source = new BufferSource(blob);
    const opened = await openEstargz(source);
    assert.equal(opened.footer.legacy, true);
    assert.equal(opened.footer.footerSize, LEGACY_FOOTER_SIZE);
    assert.equal(await hashFile(source, opened.index.byPath.get('f')!, 'f'), sha(content).slice(7));
  });

  test('not eStargz: garbage, too short, plain gzip', async () => {
    await rejectsWith(openEstargz(new BufferSource(Buffer.alloc(10))), 'NOT_ESTARGZ', /shorter than 51.*shorter than 47/);
    await rejectsWith(openEstargz(new BufferSource(Buffer.alloc(4096, 7))), 'NOT_ESTARGZ', /not an eStargz blob: eStargz footer: no gzip magic/);
    await rejectsWith(openEstargz(new BufferSource(gzipSync(Buffer.alloc(100_000)))), 'NOT_ESTARGZ', /not an eStargz blob/);
  });
});

describe('open costs', () => {
  test('one read when the TOC is in the tail, two otherwise', async () => {
    const content = Buffer.from('x');
    const small = new CountingSource(new BufferSource(blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!)] }), [content])));
    await openEstargz(small);
    assert.equal(small.reads.length, 1);
    const big = Buffer.alloc(200_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24; // poorly compressible
    const tight = new CountingSource(new BufferSource(blobWith(([o, o2]) => ({ version: 1, entries: [fileEntry('big', big, o!), fileEntry('f', content, o2!)] }), [big, content])));
    await openEstargz(tight, { tailBytes: FOOTER_SIZE });
    assert.equal(tight.reads.length, 2);
    assert.deepEqual(tight.reads[0], [tight.size - FOOTER_SIZE, FOOTER_SIZE]);
  });
});

describe('TOC validation', () => {
  const content = Buffer.from('hello');
  const one = (extra: Partial<TocEntryJson>, version = 1) =>
    blobWith(([o]) => ({ version, entries: [fileEntry('f', content, o!, extra)] }), [content]);

  test('version must be 1', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({}, 2))), 'INVALID_TOC', /version is 2/);
  });

  test('TOC JSON that is not JSON, or not an object', async () => {
    await rejectsWith(openEstargz(new BufferSource(craftBlob('{"version":1,'))), 'INVALID_TOC', /does not parse/);
    await rejectsWith(openEstargz(new BufferSource(craftBlob('[1]'))), 'INVALID_TOC', /not an object/);
  });

  test('negative and non-integer values name the entry and the key', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({ size: -1 }))), 'INVALID_TOC', /"f".*"size" is -1/);
    await rejectsWith(openEstargz(new BufferSource(one({ uid: 1.5 }))), 'INVALID_TOC', /"uid" is 1.5/);
  });

  test('offsets outside the blob', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({ offset: 1 << 30 }))), 'INVALID_TOC', /outside the blob's payload/);
  });

  test('duplicate chunk offsets', async () => {
    const blob = blobWith(([o]) => ({ version: 1, entries: [fileEntry('a', content, o!), fileEntry('b', content, o!)] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(blob)), 'INVALID_TOC', /"b".*duplicates another chunk's offset/);
  });

  test('overlapping or missing chunks', async () => {
    const c0 = Buffer.from('aaaa');
    const c1 = Buffer.from('bbbb');
    const whole = Buffer.concat([c0, c1]);
    const toc = (chunkOffset: number) => ([o0, o1]: number[]) => ({
      version: 1,
      entries: [
        { name: 'f', type: 'reg', size: 8, offset: o0, chunkSize: 4, digest: sha(whole), chunkDigest: sha(c0) },
        { name: 'f', type: 'chunk', offset: o1, chunkOffset, chunkDigest: sha(c1) },
      ],
    });
    await rejectsWith(openEstargz(new BufferSource(blobWith(toc(2), [c0, c1]))), 'INVALID_TOC', /does not follow the previous chunk/);
    const ok = await openEstargz(new BufferSource(blobWith(toc(4), [c0, c1])));
    assert.deepEqual(ok.index.byPath.get('f')!.chunks.map((c) => [c.fileOffset, c.size]), [[0, 4], [4, 4]]);
    const short = ([o0]: number[]) => ({ version: 1, entries: [{ name: 'f', type: 'reg', size: 8, offset: o0, chunkSize: 4, chunkDigest: sha(c0) }] });
    await rejectsWith(openEstargz(new BufferSource(blobWith(short, [c0]))), 'INVALID_TOC', /chunks cover 4 of 8 bytes/);
  });

  test('missing chunkDigest', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({ chunkDigest: undefined, digest: undefined }))), 'INVALID_TOC', /no valid chunkDigest/);
    // An unchunked file whose TOC has only the file digest uses it.
    const opened = await openEstargz(new BufferSource(one({ chunkDigest: undefined })));
    assert.equal(opened.index.byPath.get('f')!.chunks[0]!.digest, sha(content));
  });

  test('paths are normalized inside the layer; a name that climbs above the root is refused', async () => {
    const blob = blobWith(([o]) => ({ version: 1, entries: [fileEntry('./etc/../etc//passwd', content, o!), { name: '/a/../b/./c/', type: 'dir' }] }), [content]);
    const { index } = await openEstargz(new BufferSource(blob));
    assert.deepEqual([...index.byPath.keys()].sort(), ['', 'b', 'b/c', 'etc', 'etc/passwd']);
    assert.equal(index.byPath.get('b')!.implicit, true);
    for (const name of ['../../etc/passwd', '/a/../../b', 'x/../..', '..']) {
      const escaping = blobWith(([o]) => ({ version: 1, entries: [fileEntry(name, content, o!)] }), [content]);
      await assert.rejects(openEstargz(new BufferSource(escaping)), (err) =>
        isEstargzError(err, 'INVALID_TOC') && err.message.includes(`${JSON.stringify(name)}: name climbs above the layer root`));
    }
  });

  test('a NUL byte in a name or hardlink target is refused', async () => {
    const nul = blobWith(([o]) => ({ version: 1, entries: [fileEntry('etc/pass\u0000wd', content, o!)] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(nul)), 'INVALID_TOC', /name contains a NUL byte/);
    const link = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!), { name: 'l', type: 'hardlink', linkName: 'f\u0000' }] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(link)), 'INVALID_TOC', /"l": hardlink target contains a NUL byte/);
  });

  test('names longer or deeper than a filesystem allows are refused', async () => {
    const named = (name: string) => blobWith(() => ({ version: 1, entries: [{ name, type: 'dir' }] }));
    await rejectsWith(openEstargz(new BufferSource(named('d/'.repeat(2100)))), 'INVALID_TOC', /name is over 4096 bytes/);
    await rejectsWith(openEstargz(new BufferSource(named('x'.repeat(256)))), 'INVALID_TOC', /component over 255 bytes/);
    assert.ok(await openEstargz(new BufferSource(named('x'.repeat(255)))));
    // Multi-byte characters count in bytes, as the kernel counts them.
    await rejectsWith(openEstargz(new BufferSource(named('é'.repeat(128)))), 'INVALID_TOC', /component over 255 bytes/);
    await rejectsWith(openEstargz(new BufferSource(named('a/'.repeat(1025)))), 'INVALID_TOC', /1025 levels deep, over the limit of 1024/);
    const { buildLayerIndex } = await import('../../src/estargz/layer-index.js');
    assert.throws(() => buildLayerIndex({ version: 1, entries: [{ name: 'a/'.repeat(11), type: 'dir' }] }, { tocOffset: 100, limits: { maxDepth: 10 } }),
      (err) => isEstargzError(err, 'INVALID_TOC') && /11 levels deep, over the limit of 10/.test(err.message));
    assert.doesNotThrow(() => buildLayerIndex({ version: 1, entries: [{ name: 'a/'.repeat(10), type: 'dir' }] }, { tocOffset: 100, limits: { maxDepth: 10 } }));
  });

  test('"entries" null, missing or not an array is an invalid TOC, not an empty layer', async () => {
    await rejectsWith(openEstargz(new BufferSource(craftBlob('{"version":1,"entries":null}'))), 'INVALID_TOC', /"entries" is null, not an array/);
    await rejectsWith(openEstargz(new BufferSource(craftBlob('{"version":1}'))), 'INVALID_TOC', /has no "entries" list/);
    await rejectsWith(openEstargz(new BufferSource(craftBlob('{"version":1,"entries":{"0":{}}}'))), 'INVALID_TOC', /"entries" is a object, not an array/);
    await rejectsWith(openEstargz(new BufferSource(craftBlob('{"version":1,"entries":[null]}'))), 'INVALID_TOC', /TOC entry is not an object/);
    // An empty list is a (strange but consistent) empty layer.
    const { index } = await openEstargz(new BufferSource(craftBlob('{"version":1,"entries":[]}')));
    assert.equal(index.nodeCount, 1);
  });

  test('entry count is bounded', async () => {
    const { buildLayerIndex } = await import('../../src/estargz/layer-index.js');
    const entries = Array.from({ length: 5 }, (_, i) => ({ name: `d${i}`, type: 'dir' as const }));
    assert.throws(() => buildLayerIndex({ version: 1, entries }, { tocOffset: 100, limits: { maxEntries: 4 } }),
      (err) => isEstargzError(err, 'INVALID_TOC') && /5 entries, over the limit of 4/.test(err.message));
    assert.equal(buildLayerIndex({ version: 1, entries }, { tocOffset: 100, limits: { maxEntries: 5 } }).nodeCount, 6);
  });

  test('uid, gid and device numbers are 32-bit', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({ uid: 2 ** 32 }))), 'INVALID_TOC', /"f": "uid" is 4294967296, over the 32-bit limit/);
    await rejectsWith(openEstargz(new BufferSource(one({ gid: 2 ** 40 }))), 'INVALID_TOC', /"gid" is 1099511627776, over the 32-bit limit/);
    const dev = blobWith(() => ({ version: 1, entries: [{ name: 'dev/x', type: 'char', devMajor: 1, devMinor: 2 ** 33 }] }));
    await rejectsWith(openEstargz(new BufferSource(dev)), 'INVALID_TOC', /"dev\/x": "devMinor" is 8589934592/);
    const ok = await openEstargz(new BufferSource(one({ uid: 2 ** 32 - 1 })));
    assert.equal(ok.index.byPath.get('f')!.uid, 2 ** 32 - 1);
  });

  test('xattrs: count, name and value bounds, NUL in a name', async () => {
    const b64 = (n: number) => Buffer.alloc(n, 1).toString('base64');
    await rejectsWith(openEstargz(new BufferSource(one({ xattrs: { 'user.a\u0000b': b64(1) } }))), 'INVALID_TOC', /"f": xattr name .* has a NUL byte/);
    await rejectsWith(openEstargz(new BufferSource(one({ xattrs: { '': b64(1) } }))), 'INVALID_TOC', /xattr name "" is empty/);
    await rejectsWith(openEstargz(new BufferSource(one({ xattrs: { ['user.' + 'n'.repeat(251)]: b64(1) } }))), 'INVALID_TOC', /over 255 bytes/);
    await rejectsWith(openEstargz(new BufferSource(one({ xattrs: { 'user.big': b64((64 << 10) + 1) } }))), 'INVALID_TOC', /xattr "user.big" is 65537 bytes, over the limit of 65536/);
    const many = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [`user.k${i}`, b64(1)]));
    await rejectsWith(openEstargz(new BufferSource(one({ xattrs: many }))), 'INVALID_TOC', /"f": 1025 xattrs, over the limit of 1024/);
    const fine = await openEstargz(new BufferSource(one({ xattrs: { 'user.big': b64(64 << 10) } })));
    assert.equal(fine.index.byPath.get('f')!.xattrs.get('user.big')!.length, 64 << 10);
  });

  test('a chunk cannot need more plain bytes than its member can inflate to', async () => {
    const c = Buffer.alloc(1000, 7);
    // The member of 1000 zeros is ~30 bytes: 1032 × its length is far below 1 MB.
    const huge = blobWith(([o]) => ({ version: 1, entries: [{ name: 'f', type: 'reg', size: 1_000_000, offset: o, chunkDigest: sha(c) }] }), [c]);
    await rejectsWith(openEstargz(new BufferSource(huge)), 'INVALID_TOC', /"f": chunk at file offset 0 needs 1000000 plain bytes .* more than deflate can inflate it to/);
    const inner = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!, { innerOffset: 1 << 24 })] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(inner)), 'INVALID_TOC', /"f": chunk at file offset 0 needs 16777221 plain bytes \(inner offset 16777216 \+ size 5\)/);
    // The lying-but-plausible case stays possible (decoding then fails the digest or the size): 900,000 from a member of ~1 KB passes the bound.
    const { buildLayerIndex } = await import('../../src/estargz/layer-index.js');
    const index = buildLayerIndex({ version: 1, entries: [{ name: 'f', type: 'reg', size: 900_000, offset: 0, chunkDigest: sha(c) }] }, { tocOffset: 1000 });
    assert.equal(index.byPath.get('f')!.chunks[0]!.blobEnd, 1000);
  });

  test('a chunk is at most maxChunkBytes', async () => {
    const { buildLayerIndex } = await import('../../src/estargz/layer-index.js');
    assert.throws(() => buildLayerIndex({ version: 1, entries: [{ name: 'f', type: 'reg', size: 2048, offset: 0, chunkDigest: sha(content) }] }, { tocOffset: 100, limits: { maxChunkBytes: 1024 } }),
      (err) => isEstargzError(err, 'INVALID_TOC') && /"f": chunk at file offset 0 is 2048 bytes, over the limit of 1024/.test(err.message));
  });

  test('two chunks of one member whose plain ranges overlap', async () => {
    const a = Buffer.from('first file');
    const b = Buffer.from('second file');
    const blob = blobWith(([o]) => ({
      version: 1,
      entries: [fileEntry('a', a, o!), fileEntry('b', b, o!, { innerOffset: a.length - 1 })],
    }), [Buffer.concat([a, b])]);
    await rejectsWith(openEstargz(new BufferSource(blob)), 'INVALID_TOC', /"a": chunk at blob offset 0, inner range \[0, 10\), overlaps the chunk of "b" at inner offset 9/);
  });

  test('a chunk entry names its file, and follows it', async () => {
    const c0 = Buffer.from('aaaa');
    const c1 = Buffer.from('bbbb');
    const toc = (chunkName: string) => ([o0, o1]: number[]) => ({
      version: 1,
      entries: [
        { name: 'f', type: 'reg', size: 8, offset: o0, chunkSize: 4, chunkDigest: sha(c0) },
        { name: chunkName, type: 'chunk', offset: o1, chunkOffset: 4, chunkDigest: sha(c1) },
      ],
    });
    await rejectsWith(openEstargz(new BufferSource(blobWith(toc('g'), [c0, c1]))), 'INVALID_TOC', /"g": "chunk" entry follows the regular file "f"/);
    assert.ok(await openEstargz(new BufferSource(blobWith(toc('./f'), [c0, c1]))));
    const orphan = blobWith(([o]) => ({ version: 1, entries: [{ name: 'd', type: 'dir' }, { name: 'd', type: 'chunk', offset: o, chunkOffset: 0, chunkSize: 4, chunkDigest: sha(c0) }] }), [c0]);
    await rejectsWith(openEstargz(new BufferSource(orphan)), 'INVALID_TOC', /"chunk" entry does not follow a regular file/);
  });

  test('chunk offsets lie before the TOC', async () => {
    const blob = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!)] }), [content]);
    const tocOffset = (await openEstargz(new BufferSource(blob))).footer.tocOffset;
    const at = blobWith(() => ({ version: 1, entries: [fileEntry('f', content, tocOffset)] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(at)), 'INVALID_TOC', new RegExp(`"f": chunk offset ${tocOffset} is outside the blob's payload`));
  });

  test('a hardlink to a later entry, or to itself, is refused; a symlink target is only data', async () => {
    const later = blobWith(([o]) => ({ version: 1, entries: [{ name: 'l', type: 'hardlink', linkName: 'f' }, fileEntry('f', content, o!)] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(later)), 'INVALID_TOC', /"l": hardlink target "f" is not an earlier entry/);
    const self = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!), { name: 'f', type: 'hardlink', linkName: 'f' }] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(self)), 'INVALID_TOC', /"f": hardlink to itself/);
    const escape = blobWith(([o]) => ({ version: 1, entries: [fileEntry('f', content, o!), { name: 'l', type: 'hardlink', linkName: '../f' }] }), [content]);
    await rejectsWith(openEstargz(new BufferSource(escape)), 'INVALID_TOC', /"l": hardlink target climbs above the layer root/);
    const symlinks = blobWith(() => ({ version: 1, entries: [{ name: 's', type: 'symlink', linkName: '../../../etc/shadow' }, { name: 't', type: 'symlink', linkName: '/abs\u0001' }] }));
    const { index } = await openEstargz(new BufferSource(symlinks));
    assert.equal(index.byPath.get('s')!.linkName, '../../../etc/shadow');
    assert.equal(index.byPath.get('t')!.linkName, '/abs\u0001');
  });

  test('hardlink to a missing target, or to a directory', async () => {
    const blob = blobWith(() => ({ version: 1, entries: [{ name: 'l', type: 'hardlink', linkName: 'nope' }] }));
    await rejectsWith(openEstargz(new BufferSource(blob)), 'INVALID_TOC', /hardlink target "nope" is not an earlier entry/);
    const toDir = blobWith(() => ({ version: 1, entries: [{ name: 'd', type: 'dir' }, { name: 'l', type: 'hardlink', linkName: 'd' }] }));
    await rejectsWith(openEstargz(new BufferSource(toDir)), 'INVALID_TOC', /hardlink to directory/);
  });

  test('TOC size cap', async () => {
    await rejectsWith(openEstargz(new BufferSource(one({})), { maxTocBytes: 64 }), 'LIMIT', /over the limit of 64/);
  });

  test('unknown type is rejected, unknown keys are ignored, mode may carry type bits, names back-fill', async () => {
    const bad = blobWith(() => ({ version: 1, entries: [{ name: 'x', type: 'socket' }] }));
    await rejectsWith(openEstargz(new BufferSource(bad)), 'INVALID_TOC', /unknown type "socket"/);
    const blob = blobWith(([o]) => ({
      version: 1,
      entries: [
        { name: 'd/', type: 'dir', mode: 0o40755, uid: 5, userName: 'five', NumLink: 0, futureKey: { a: 1 } },
        fileEntry('d/f', content, o!, { mode: 0o100644, uid: 5, xattrs: { 'user.k': Buffer.from([0, 1, 255]).toString('base64') }, modtime: '2100-01-01T00:00:00Z' }),
      ],
    }), [content]);
    const { index } = await openEstargz(new BufferSource(blob));
    const f = index.byPath.get('d/f')!;
    assert.equal(index.byPath.get('d')!.mode, 0o755);
    assert.equal(f.mode, 0o644);
    assert.equal(f.userName, 'five');
    assert.equal(f.mtime, 4102444800);
    assert.deepEqual(f.xattrs.get('user.k'), Buffer.from([0, 1, 255]));
  });
});

describe('chunk decode and verify', () => {
  const ref = (data: Buffer, innerOffset = 0, size = data.length - innerOffset) => ({
    path: 'p', fileOffset: 0, innerOffset, size, digest: sha(data.subarray(innerOffset, innerOffset + size)), blobOffset: 0,
  });

  test('zlib and pako agree, innerOffset is honoured', () => {
    const data = Buffer.from('0123456789'.repeat(1000));
    const member = gzipSync(data);
    for (const decoder of ['zlib', 'pako'] as const) {
      assert.deepEqual(decodeChunk(member, ref(data), decoder), data);
      assert.deepEqual(decodeChunk(member, ref(data, 7, 100), decoder), data.subarray(7, 107));
    }
  });

  test('innerOffset: two files in one member read back through the index', async () => {
    const a = Buffer.from('first file');
    const b = Buffer.from('second file');
    const blob = blobWith(([o]) => ({
      version: 1,
      entries: [fileEntry('a', a, o!), fileEntry('b', b, o!, { innerOffset: a.length })],
    }), [Buffer.concat([a, b])]);
    const source = new BufferSource(blob);
    const { index } = await openEstargz(source);
    assert.equal(await hashFile(source, index.byPath.get('a')!, 'a'), sha(a).slice(7));
    assert.equal(await hashFile(source, index.byPath.get('b')!, 'b'), sha(b).slice(7));
  });

  test('a member that inflates far past its chunk is not inflated in full (no decompression bomb)', () => {
    const bomb = gzipSync(Buffer.alloc(256 << 20)); // 256 MiB of zeros in ~250 KiB
    const head = Buffer.alloc(16);
    for (const decoder of ['zlib', 'pako'] as const) {
      const before = process.memoryUsage().arrayBuffers;
      assert.deepEqual(decodeChunk(bomb, ref(head), decoder), head);
      assert.ok(process.memoryUsage().arrayBuffers - before < 64 << 20, decoder);
    }
  });

  test('wrong bytes fail naming file, offset and both digests; a broken member fails clearly', () => {
    const data = Buffer.from('payload');
    const r = { ...ref(data), digest: sha(Buffer.from('other')), path: 'etc/x', fileOffset: 4096 };
    assert.throws(() => decodeChunk(gzipSync(data), r), (err) =>
      isEstargzError(err, 'CHUNK_DIGEST_MISMATCH') && err.message.includes('"etc/x"') && err.message.includes('file offset 4096')
      && err.message.includes(r.digest) && err.message.includes(sha(data)));
    assert.throws(() => decodeChunk(Buffer.from('not gzip at all'), ref(data)), (err) => isEstargzError(err, 'CHUNK_CORRUPT'));
    assert.throws(() => decodeChunk(gzipSync(data).subarray(0, 12), ref(data)), (err) => isEstargzError(err, 'CHUNK_CORRUPT') && /expected at least 7/.test(err.message));
  });
});

describe('name order', () => {
  test('compareNames is code-point (UTF-8 byte) order, also for astral characters', async () => {
    const { compareNames } = await import('../../src/estargz/layer-index.js');
    const names = ['b', 'a', '\u{1F600}', '\uFF21', 'é', 'e\u0301', 'Z', 'a-', 'a', ''];
    const bytes = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual([...names].sort(compareNames), bytes);
  });
});
