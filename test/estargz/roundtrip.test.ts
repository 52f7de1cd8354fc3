import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { listEntries } from '../../src/estargz/listing.js';
import { openEstargz } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { verifyBlob } from '../../src/estargz/verify.js';
import { convertLayer, type ConvertOptions, type ConvertResult } from '../../src/estargz/writer/convert.js';
import { expectedTree, makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Collects a writable's bytes. */
function sink(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  return {
    stream: new Writable({ write(chunk: Buffer, _e, cb) { parts.push(chunk); cb(); } }),
    bytes: () => Buffer.concat(parts),
  };
}

async function convert(tarBytes: Buffer, opts: ConvertOptions = {}): Promise<{ blob: Buffer; result: ConvertResult }> {
  const out = sink();
  const result = await convertLayer(Readable.from([tarBytes]), out.stream, opts);
  return { blob: out.bytes(), result };
}

function sha(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/** The converter's own claims, checked from the outside. */
function checkResult(blob: Buffer, result: ConvertResult): void {
  assert.equal(result.size, blob.length);
  assert.equal(result.digest, sha(blob));
  const plain = gunzipSync(blob); // the whole blob is one valid multi-member gzip
  assert.equal(result.uncompressedSize, plain.length);
  assert.equal(result.diffID, sha(plain));
}

const KiB = 1024;
const CHUNK = 64 * KiB;

const everyType: SpecEntry[] = [
  { name: 'dir/', type: 'directory', mode: 0o755, mtime: 1 },
  { name: 'dir/empty', type: 'file', content: Buffer.alloc(0) },
  { name: 'dir/one', type: 'file', content: Buffer.from('x') },
  { name: 'dir/4095', type: 'file', content: randomBytes(4095, 1) },
  { name: 'dir/4096', type: 'file', content: randomBytes(4096, 2) },
  { name: 'dir/4097', type: 'file', content: randomBytes(4097, 3) },
  { name: 'big/chunk-1', type: 'file', content: randomBytes(CHUNK - 1, 4) },
  { name: 'big/chunk', type: 'file', content: randomBytes(CHUNK, 5) },
  { name: 'big/chunk+1', type: 'file', content: randomBytes(CHUNK + 1, 6) },
  { name: 'big/3chunks', type: 'file', content: Buffer.alloc(3 * CHUNK, 'abc') },
  { name: 'big/3chunks-1', type: 'file', content: randomBytes(3 * CHUNK - 1, 7) },
  { name: 'links/sym', type: 'symlink', linkname: '../dir/one' },
  { name: 'links/abs', type: 'symlink', linkname: '/etc/passwd' },
  { name: 'links/hard', type: 'link', linkname: 'dir/4097' },
  { name: 'links/hard2', type: 'link', linkname: 'links/hard' },
  { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'dev/loop0', type: 'block-device', devmajor: 7, devminor: 0, mode: 0o660, gid: 6 },
  { name: 'dev/fifo', type: 'fifo', mode: 0o600 },
  { name: 'modes/suid', type: 'file', mode: 0o4755, content: Buffer.from('#!/bin/sh\n') },
  { name: 'modes/sgid-dir', type: 'directory', mode: 0o2775 },
  { name: 'modes/sticky', type: 'directory', mode: 0o1777 },
  { name: 'owners/alice', type: 'file', uid: 1000, gid: 1000, uname: 'alice', gname: 'alice', content: Buffer.from('a') },
  { name: 'owners/alice2', type: 'file', uid: 1000, gid: 100, uname: 'alice', gname: 'users', content: Buffer.from('b') },
  { name: 'owners/big-ids', type: 'file', uid: 3000000, gid: 2097152, content: Buffer.from('c') },
  { name: 'xattrs/f', type: 'file', content: Buffer.from('x'), xattrs: { 'user.foo': 'bar', 'security.selinux': 'system_u:object_r:bin_t:s0' } },
  { name: `long/${'d'.repeat(120)}/${'f'.repeat(150)}`, type: 'file', content: Buffer.from('long') },
  { name: 'unicode/é-nfc', type: 'file', content: Buffer.from('nfc') },
  { name: 'unicode/e\u0301-nfd', type: 'file', content: Buffer.from('nfd') },
  { name: 'overlay/.wh.gone', type: 'file', content: Buffer.alloc(0) },
  { name: 'overlay/opaque/.wh..wh..opq', type: 'file', content: Buffer.alloc(0) },
  { name: 'times/2242', type: 'file', mtime: 8589934592, content: Buffer.from('future') },
  { name: 'times/epoch', type: 'file', mtime: 0, content: Buffer.from('epoch') },
];

describe('converter round trips (our writer → our reader)', () => {
  test('every entry type, chunk boundaries ±1: ls equals the source tree, blob claims hold', async () => {
    const { blob, result } = await convert(await makeLayerTar(everyType), { chunkSize: CHUNK });
    checkResult(blob, result);
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.deepEqual(await listEntries(opened, source), expectedTree(everyType, '.no.prefetch.landmark'));
    const chunkSizes = (p: string) => opened.index.byPath.get(p)!.chunks.map((c) => c.size);
    assert.deepEqual(chunkSizes('big/chunk-1'), [CHUNK - 1]);
    assert.deepEqual(chunkSizes('big/chunk'), [CHUNK]);
    assert.deepEqual(chunkSizes('big/chunk+1'), [CHUNK, 1]);
    assert.deepEqual(chunkSizes('big/3chunks'), [CHUNK, CHUNK, CHUNK]);
    assert.deepEqual(chunkSizes('big/3chunks-1'), [CHUNK, CHUNK, CHUNK - 1]);
    assert.equal(opened.index.byPath.get('links/hard2'), opened.index.byPath.get('dir/4097'));
    assert.equal(opened.index.byPath.get('dir/4097')!.nlink, 3);
    // The landmark comes first, and nothing is prefetched.
    assert.equal(opened.toc.entries[0]!.name, '.no.prefetch.landmark');
    assert.equal(opened.index.prefetch.kind, 'none');
    // A plain tar reader sees the input entries, then the TOC last.
    const plain = gunzipSync(blob);
    assert.equal(plain.subarray(plain.length - 1024).every((b) => b === 0), true);
  });

  test('the TOC member is the last member, and each payload starts its own member', async () => {
    const { blob, result } = await convert(await makeLayerTar(everyType), { chunkSize: CHUNK });
    const opened = await openEstargz(new BufferSource(blob), { tocDigest: result.tocDigest });
    for (const [path, node] of opened.index.byPath) {
      for (const c of node.chunks) {
        const member = blob.subarray(c.blobOffset, c.blobEnd);
        assert.equal(member[0], 0x1f, path);
        assert.equal(gunzipSync(member).subarray(0, c.size).length, c.size, path);
      }
    }
  });

  test('empty layer: only the landmark, a synthesized root', async () => {
    const { blob, result } = await convert(await makeLayerTar([]));
    checkResult(blob, result);
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.deepEqual(await listEntries(opened, source), expectedTree([], '.no.prefetch.landmark'));
    assert.equal(opened.index.root.mode, 0o755);
  });

  test('20,000 entries', async () => {
    const spec: SpecEntry[] = [];
    for (let d = 0; d < 200; d++) {
      spec.push({ name: `d${d}/`, type: 'directory' });
      for (let f = 0; f < 99; f++) spec.push({ name: `d${d}/f${f}`, type: 'file', content: Buffer.from(`${d}/${f}\n`) });
    }
    assert.equal(spec.length, 20000);
    const { blob, result } = await convert(await makeLayerTar(spec), { level: 1 });
    checkResult(blob, result);
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.equal(opened.toc.entries.length, 20001);
    assert.deepEqual(await listEntries(opened, source), expectedTree(spec, '.no.prefetch.landmark'));
  });

  test('prioritized files come first with their parents and hardlink targets, then .prefetch.landmark', async () => {
    const spec: SpecEntry[] = [
      { name: 'a/', type: 'directory' },
      { name: 'a/x', type: 'file', content: Buffer.from('x') },
      { name: 'b/', type: 'directory' },
      { name: 'b/c/', type: 'directory' },
      { name: 'b/c/target', type: 'file', content: Buffer.from('t') },
      { name: 'z', type: 'file', content: Buffer.from('z') },
      { name: 'b/link', type: 'link', linkname: 'b/c/target' },
    ];
    const { blob, result } = await convert(await makeLayerTar(spec), { prioritizedFiles: ['z', 'b/link', 'missing'] });
    assert.deepEqual(result.missedPrioritized, ['missing']);
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.deepEqual(opened.toc.entries.map((e) => e.name), ['z', 'b/', 'b/c/', 'b/c/target', 'b/link', '.prefetch.landmark', 'a/', 'a/x']);
    const landmark = opened.index.byPath.get('.prefetch.landmark')!;
    assert.deepEqual(opened.index.prefetch, { kind: 'landmark', end: landmark.chunks[0]!.blobOffset });
    assert.deepEqual(await listEntries(opened, source), expectedTree(spec, '.prefetch.landmark'));
  });

  test('a later entry with the same name replaces the earlier one; old landmarks and TOC are dropped', async () => {
    const spec: SpecEntry[] = [
      { name: 'f', type: 'file', content: Buffer.from('old') },
      { name: '.no.prefetch.landmark', type: 'file', content: Buffer.of(0x0f) },
      { name: 'stargz.index.json', type: 'file', content: Buffer.from('{}') },
      { name: './f', type: 'file', content: Buffer.from('new'), mode: 0o600 },
    ];
    const { blob, result } = await convert(await makeLayerTar(spec));
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.deepEqual(opened.toc.entries.map((e) => e.name), ['.no.prefetch.landmark', './f']);
    assert.deepEqual(await listEntries(opened, source), expectedTree([spec[3]!], '.no.prefetch.landmark'));
  });

  test('gzip input, file input and stream input give the same blob', async () => {
    const tarBytes = await makeLayerTar(everyType);
    const dir = await mkdtemp(join(tmpdir(), 'estargz-rt-'));
    try {
      await writeFile(join(dir, 'l.tar'), tarBytes);
      await writeFile(join(dir, 'l.tar.gz'), gzipSync(tarBytes));
      const fromStream = await convert(tarBytes, { chunkSize: CHUNK, level: 1 });
      for (const file of ['l.tar', 'l.tar.gz']) {
        const out = sink();
        const result = await convertLayer(join(dir, file), out.stream, { chunkSize: CHUNK, level: 1 });
        assert.deepEqual(result, fromStream.result, file);
        assert.deepEqual(out.bytes(), fromStream.blob, file);
      }
      const gzStream = await convert(gzipSync(tarBytes), { chunkSize: CHUNK, level: 1 });
      assert.deepEqual(gzStream.result, fromStream.result);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('binary xattr values, GNU long names and ustar prefixes survive byte-exact', async () => {
    // A PAX header with a raw (non-UTF-8) xattr value, as GNU tar writes it, built by hand.
    const value = Buffer.from([0xff, 0x00, 0x3d, 0x0a, 0x80]);
    const record = (key: string, val: Buffer): Buffer => {
      const body = Buffer.concat([Buffer.from(` ${key}=`), val, Buffer.from('\n')]);
      let len = body.length + 1;
      while (String(len).length + body.length !== len) len = String(len).length + body.length;
      return Buffer.concat([Buffer.from(String(len)), body]);
    };
    const paxData = record('SCHILY.xattr.user.bin', value);
    const { headerCodec } = await import('../../src/estargz/tar/header-codec.js');
    const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
    const paxHeader = headerCodec.encode({ name: 'PaxHeaders/f', mode: 0o644, uid: 0, gid: 0, size: paxData.length, mtime: new Date(0), type: 'file' })!;
    paxHeader[156] = 'x'.charCodeAt(0);
    fixChecksum(paxHeader);
    const fileHeader = headerCodec.encode({ name: 'f', mode: 0o644, uid: 0, gid: 0, size: 2, mtime: new Date(1e12), type: 'file' })!;
    // GNU 'L' record for a 200-char name.
    const longName = `gnu/${'n'.repeat(196)}`;
    const lHeader = headerCodec.encode({ name: '././@LongLink', mode: 0, uid: 0, gid: 0, size: longName.length + 1, mtime: new Date(0), type: 'file' })!;
    lHeader[156] = 'L'.charCodeAt(0);
    fixChecksum(lHeader);
    const lFile = headerCodec.encode({ name: longName.slice(0, 100), mode: 0o600, uid: 0, gid: 0, size: 1, mtime: new Date(1e12), type: 'file' })!;
    const tarBytes = Buffer.concat([
      paxHeader, pad(paxData), fileHeader, pad(Buffer.from('hi')),
      lHeader, pad(Buffer.from(longName + '\0')), lFile, pad(Buffer.from('L')),
      (await makeLayerTar([{ name: `${'p'.repeat(90)}/${'q'.repeat(90)}`, type: 'file', content: Buffer.from('u') }])),
    ]);
    const { blob, result } = await convert(tarBytes);
    const source = new BufferSource(blob);
    const opened = await openEstargz(source, { tocDigest: result.tocDigest });
    assert.deepEqual(opened.index.byPath.get('f')!.xattrs.get('user.bin'), value);
    assert.ok(opened.index.byPath.get(longName));
    assert.ok(opened.index.byPath.get(`${'p'.repeat(90)}/${'q'.repeat(90)}`));
    // Header bytes are copied verbatim: the uncompressed blob starts with the landmark, then the input's bytes.
    const plain = gunzipSync(blob);
    assert.ok(plain.includes(Buffer.concat([paxHeader, pad(paxData), fileHeader])));
  });

  test('a whole blob verifies, and the converter output is deterministic', async () => {
    const tarBytes = await makeLayerTar(everyType);
    const a = await convert(tarBytes, { chunkSize: CHUNK });
    const b = await convert(tarBytes, { chunkSize: CHUNK });
    assert.deepEqual(a.blob, b.blob);
    const summary = await verifyBlob(new BufferSource(a.blob), { tocDigest: a.result.tocDigest });
    assert.equal(summary.files, everyType.filter((e) => e.type === 'file').length + 1);
  });
});

function fixChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}
