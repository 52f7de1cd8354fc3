import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferSource } from '../../src/estargz/source.js';
import { ZstdChunkedError, type LayerPart, type ZstdChunkedErrorCode } from '../../src/zstdchunked/errors.js';
import { readZstdFileChunks } from '../../src/zstdchunked/file-chunks.js';
import { MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION } from '../../src/zstdchunked/annotations.js';
import type { ManifestEntry, ManifestJson } from '../../src/zstdchunked/manifest.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { decodeBatch } from '../../workers/decode-batch.js';
import { prng } from '../../testkit/prng.js';
import { loadZstdFixture } from './fixture.js';
import { remake } from './remake.js';

async function refused(run: () => Promise<unknown>, code: ZstdChunkedErrorCode, part: LayerPart, message: RegExp): Promise<ZstdChunkedError> {
  try {
    await run();
  } catch (err) {
    assert.ok(err instanceof ZstdChunkedError, `a ZstdChunkedError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.context.part, part, err.message);
    assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a refusal with ${code}`);
}

const open = (blob: Buffer, annotations: Record<string, string>) => () => openZstdChunked(new BufferSource(blob), annotations);
const entry = (m: ManifestJson, name: string, nth = 0): ManifestEntry => m.entries.filter((e) => e.name === name)[nth]!;

describe('zstd:chunked bad input', () => {
  it('the remade blob (the fixture written again) opens: the faults below are the only ones', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: () => {} });
    const blob = await openZstdChunked(new BufferSource(r.blob), r.annotations);
    assert.equal(blob.index.byPath.get('bin/busybox')!.size, 1982256);
  });

  it('a wrong manifest-checksum', async () => {
    const fx = await loadZstdFixture();
    const annotations = { ...fx.annotations, [MANIFEST_CHECKSUM_ANNOTATION]: 'sha256:' + '0'.repeat(64) };
    const err = await refused(open(fx.blob, annotations), 'MANIFEST_DIGEST_MISMATCH', 'manifest', /manifest's sha256 is sha256:5e5082ff.*annotation says sha256:0000/);
    assert.equal(err.context.expected, 'sha256:' + '0'.repeat(64));
  });

  it('a manifest-checksum that is not a digest, and positions that are not numbers', async () => {
    const fx = await loadZstdFixture();
    await refused(open(fx.blob, { ...fx.annotations, [MANIFEST_CHECKSUM_ANNOTATION]: 'md5:abc' }), 'INVALID_ANNOTATION', 'annotations', /not a sha256 digest/);
    await refused(open(fx.blob, { ...fx.annotations, [MANIFEST_POSITION_ANNOTATION]: '1048949:2424:9048' }), 'INVALID_ANNOTATION', 'annotations', /expected 4 decimal integers/);
    await refused(open(fx.blob, { ...fx.annotations, [MANIFEST_POSITION_ANNOTATION]: '1048949:2424:-1:1' }), 'INVALID_ANNOTATION', 'annotations', /expected 4 decimal integers/);
    await refused(open(fx.blob, {}), 'NOT_ZSTD_CHUNKED', 'annotations', /no io\.github\.containers\.zstd-chunked\.manifest-checksum/);
    await refused(open(fx.blob, { ...fx.annotations, 'containerd.io/snapshot/stargz/toc.digest': 'sha256:' + '2'.repeat(64) }), 'INVALID_ANNOTATION', 'annotations', /both .* and the eStargz/);
  });

  it('annotations that disagree with the footer', async () => {
    const fx = await loadZstdFixture();
    await refused(open(fx.blob, { ...fx.annotations, [MANIFEST_POSITION_ANNOTATION]: '1048949:2424:9049:1' }), 'INVALID_ANNOTATION', 'annotations', /disagrees with the footer's 1048949:2424:9048:1/);
  });

  it('manifest offsets outside the blob (past the data frames)', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: (m) => { entry(m, 'etc/hello.txt').endOffset = 1048941 + 100; } });
    await refused(open(r.blob, r.annotations), 'INVALID_MANIFEST', 'manifest', /"etc\/hello\.txt".*past the end of the data frames at 1048941/);
    const r2 = remake(fx, { manifest: (m) => { entry(m, 'etc/hello.txt').offset = 0; } });
    await refused(open(r2.blob, r2.annotations), 'INVALID_MANIFEST', 'manifest', /"etc\/hello\.txt".*no blob offset/);
  });

  it('manifest offsets overlapping another file\'s frames', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: (m) => { const e = entry(m, 'etc/hello.txt'); e.offset = 1000; e.endOffset = 1029; } });
    await refused(open(r.blob, r.annotations), 'INVALID_MANIFEST', 'manifest', /"etc\/hello\.txt".*frame \[1000, 1029\), overlapping the frame \[640, 12535\) of "bin\/busybox"/);
  });

  it('chunks out of order, chunks that do not tile the file, unknown types and chunk types', async () => {
    const fx = await loadZstdFixture();
    const cases: [(m: ManifestJson) => void, RegExp][] = [
      [(m) => { entry(m, 'bin/busybox', 1).offset = 100; }, /starts at blob offset 100, not after the previous chunk's frame at 113/],
      [(m) => { entry(m, 'bin/busybox', 2).chunkOffset = 4097; }, /does not follow the previous chunk/],
      [(m) => { m.entries.splice(m.entries.indexOf(entry(m, 'bin/busybox', 5)), 1); }, /does not follow the previous chunk|chunks cover/],
      [(m) => { entry(m, 'bin/busybox', 1).chunkType = 'holes'; }, /unknown chunkType "holes"/],
      [(m) => { entry(m, 'tmp/').type = 'socket'; }, /unknown type "socket"/],
      [(m) => { entry(m, 'etc/hello.txt').size = 1 << 30; }, /more than its frame of 29 bytes can hold|chunk/],
    ];
    for (const [change, message] of cases) {
      const r = remake(fx, { manifest: change });
      await refused(open(r.blob, r.annotations), 'INVALID_MANIFEST', 'manifest', message);
    }
  });

  it('names that leave the layer, and a path listed twice', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: (m) => { entry(m, 'bin/cat').name = '../../etc/cat'; } });
    await refused(open(r.blob, r.annotations), 'INVALID_MANIFEST', 'manifest', /climbs above the layer root/);
    const r2 = remake(fx, { manifest: (m) => { entry(m, 'bin/echo').name = 'bin/cat'; } });
    await refused(open(r2.blob, r2.annotations), 'INVALID_MANIFEST', 'manifest', /"bin\/cat": the path is listed twice/);
  });

  it('a chunk whose digest does not match (manifest says another digest; the worker path names it too)', async () => {
    const fx = await loadZstdFixture();
    const wrong = 'sha256:' + 'ab'.repeat(32);
    const r = remake(fx, { manifest: (m) => { entry(m, 'bin/busybox', 3).chunkDigest = wrong; } });
    const source = new BufferSource(r.blob);
    const blob = await openZstdChunked(source, r.annotations);
    const node = blob.index.byPath.get('bin/busybox')!;
    const err = await refused(async () => { for await (const _ of readZstdFileChunks(source, node)) { /* read all */ } },
      'CHUNK_DIGEST_MISMATCH', 'chunk', /chunk of "bin\/busybox" at file offset 42303 \(blob offset 12535\) failed verification: expected sha256:abab/);
    assert.equal(err.context.chunkOffset, 42303);
    assert.equal(err.context.blobOffset, 12535);

    // The worker task: the bad chunk fails alone, with its code and context; its neighbours decode.
    const chunks = node.chunks.slice(2, 5);
    const start = chunks[0]!.blobOffset;
    const end = chunks.at(-1)!.blobEnd;
    const buffer = new Uint8Array(r.blob.subarray(start, end)).buffer;
    const result = decodeBatch({
      decoder: 'zlib', buffer,
      items: chunks.map((c) => ({ offset: c.blobOffset - start, length: c.blobEnd - c.blobOffset, refs: [{ path: 'bin/busybox', fileOffset: c.fileOffset, innerOffset: 0, size: c.size, digest: c.digest, blobOffset: c.blobOffset, codec: 'zstd' as const }] })),
    });
    assert.ok('buffer' in result.results[0]! && result.results[0].length === chunks[0]!.size);
    const failure = result.results[1] as { code: string; path: string; chunkOffset: number; compressed: { offset: number; length: number } };
    assert.deepEqual({ path: failure.path, chunkOffset: failure.chunkOffset, compressed: failure.compressed },
      { path: 'bin/busybox', chunkOffset: chunks[1]!.fileOffset, compressed: { offset: chunks[1]!.blobOffset, length: chunks[1]!.blobEnd - chunks[1]!.blobOffset } });
    assert.equal((result.results[1] as { code: string }).code, 'CHUNK_DIGEST_MISMATCH');
    assert.match((result.results[1] as { message: string }).message, /"bin\/busybox" at file offset 42303/);
    assert.ok('buffer' in result.results[2]!);
  });

  it('a damaged chunk frame, and a zeros chunk whose digest is not of zeros', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { payload: (p) => { p[700] = p[700]! ^ 0x55; return p; } });
    const source = new BufferSource(r.blob);
    const blob = await openZstdChunked(source, r.annotations);
    const node = blob.index.byPath.get('bin/busybox')!;
    const err = await refused(async () => { for await (const _ of readZstdFileChunks(source, node)) { /* read all */ } },
      'CHUNK_CORRUPT', 'chunk', /chunk of "bin\/busybox" at file offset 4096 \(blob offset 640\) (is not a valid zstd frame|decodes to)/);
    assert.equal(err.context.path, 'bin/busybox');

    const r2 = remake(fx, { manifest: (m) => { entry(m, 'bin/busybox', 1).chunkDigest = entry(m, 'bin/busybox', 2).chunkDigest; } });
    const source2 = new BufferSource(r2.blob);
    const node2 = (await openZstdChunked(source2, r2.annotations)).index.byPath.get('bin/busybox')!;
    await refused(async () => { for await (const _ of readZstdFileChunks(source2, node2)) { /* read all */ } },
      'CHUNK_DIGEST_MISMATCH', 'chunk', /file offset 1755 .* failed verification/);
  });

  it('a chunk whose frame holds more than the chunk size is refused without decoding past it', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: (m) => { entry(m, 'bin/busybox', 2).chunkSize = 38206; entry(m, 'bin/busybox', 3).chunkOffset = 42302; entry(m, 'bin/busybox', 3).chunkSize = 11257; } });
    const source = new BufferSource(r.blob);
    const node = (await openZstdChunked(source, r.annotations)).index.byPath.get('bin/busybox')!;
    await refused(async () => { for await (const _ of readZstdFileChunks(source, node)) { /* read all */ } },
      'CHUNK_CORRUPT', 'chunk', /file offset 4096 .* decodes to more than its 38206 bytes/);
  });

  it('a truncated blob', async () => {
    const fx = await loadZstdFixture();
    for (const cut of [1, 72, 800, 5000, 600_000]) {
      await refused(open(fx.blob.subarray(0, fx.blob.length - cut), fx.annotations), 'BLOB_SIZE_MISMATCH', 'blob', new RegExp(`the blob is ${fx.blob.length - cut} bytes, its annotations say it ends at 1052245: it is truncated`));
    }
    await refused(open(Buffer.concat([fx.blob, Buffer.alloc(10)]), fx.annotations), 'BLOB_SIZE_MISMATCH', 'blob', /longer than its frames/);
  });

  it('a footer with a wrong magic, or not in a skippable frame', async () => {
    const fx = await loadZstdFixture();
    const blob = Buffer.from(fx.blob);
    blob[blob.length - 1] = 0x79; // "GNUlInUy"
    await refused(open(blob, fx.annotations), 'NOT_ZSTD_CHUNKED', 'footer', /not the magic "GNUlInUx"/);
    const blob2 = Buffer.from(fx.blob);
    blob2[blob2.length - 72 + 4] = 65;
    await refused(open(blob2, fx.annotations), 'INVALID_FOOTER', 'footer', /not in a skippable frame of 64 bytes/);
    const blob3 = Buffer.from(fx.blob);
    blob3.writeBigUInt64LE(2n, blob3.length - 64 + 24);
    await refused(open(blob3, fx.annotations), 'UNSUPPORTED', 'footer', /manifest type 2/);
  });

  it('a manifest that decompresses past its declared size (the declared size is a hard bound)', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { manifest: () => {}, declaredManifestLength: 9047 });
    await refused(open(r.blob, r.annotations), 'INVALID_MANIFEST', 'manifest', /decompresses past its declared size of 9047 bytes/);
    // A small frame that expands far past its declaration: refused at the bound, not decoded whole.
    const bomb = remake(fx, { manifestJson: (json) => Buffer.concat([json, Buffer.alloc(16 << 20, 0x20)]), declaredManifestLength: 9048 });
    await refused(open(bomb.blob, bomb.annotations), 'INVALID_MANIFEST', 'manifest', /decompresses past its declared size of 9048 bytes/);
    const short = remake(fx, { manifest: () => {}, declaredManifestLength: 9049 });
    await refused(open(short.blob, short.annotations), 'INVALID_MANIFEST', 'manifest', /fewer bytes than its declared 9049/);
  });

  it('a tar-split digest mismatch', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { tarSplit: (t) => { t[100] = t[100]! ^ 1; return t; } });
    const err = await refused(open(r.blob, r.annotations), 'TARSPLIT_DIGEST_MISMATCH', 'tar-split', /tarSplitDigest is sha256:802956ea/);
    assert.equal(err.context.expected, 'sha256:802956ea8e8bd1ab6a962b4673b84b772b2cd43784c139af9506eec73be50194');
    const r2 = remake(fx, { manifest: (m) => { m.tarSplitDigest = 'sha256:' + '1'.repeat(64); } });
    await refused(open(r2.blob, r2.annotations), 'TARSPLIT_DIGEST_MISMATCH', 'tar-split', /tarSplitDigest is sha256:1111/);
  });

  it('a tar-split that decodes past (or short of) its declared size', async () => {
    const fx = await loadZstdFixture();
    const r = remake(fx, { declaredTarSplitLength: 16000 });
    await refused(open(r.blob, r.annotations), 'INVALID_TARSPLIT', 'tar-split', /decodes past its declared size of 16000 bytes/);
    const r2 = remake(fx, { declaredTarSplitLength: 16412 });
    await refused(open(r2.blob, r2.annotations), 'INVALID_TARSPLIT', 'tar-split', /decodes to 16411 bytes, not its declared 16412/);
  });

  it('a manifest that disagrees with the tar-split\'s headers', async () => {
    const fx = await loadZstdFixture();
    const cases: [(m: ManifestJson) => void, RegExp][] = [
      [(m) => { entry(m, 'etc/hello.txt').mode = 0o100600; }, /"etc\/hello\.txt" differs from the manifest's: mode 644 != 600/],
      [(m) => { entry(m, 'bin/sh').linkName = 'sh2'; }, /"bin\/sh" differs .*linkName "busybox" != "sh2"/],
      [(m) => { entry(m, 'tmp/').uid = 1000; }, /"tmp\/" differs .*uid 0 != 1000/],
      [(m) => { m.entries.splice(m.entries.indexOf(entry(m, 'bin/wc')), 1); }, /entry "bin\/wc" that the manifest does not list/],
      [(m) => { m.entries.push({ type: 'dir', name: 'extra/', mode: 0o40755 }); }, /lists 1 entries the tar does not have, e.g. "extra\/"/],
    ];
    for (const [change, message] of cases) {
      const r = remake(fx, { manifest: change });
      await refused(open(r.blob, r.annotations), 'INVALID_TARSPLIT', 'tar-split', message);
    }
  });

  it('random damage to the blob\'s end and random truncations: only ZstdChunkedError, never another throw', async () => {
    const fx = await loadZstdFixture();
    const rand = prng(15);
    const tailStart = 1048941;
    let refusals = 0;
    for (let i = 0; i < 150; i++) {
      const blob = Buffer.from(fx.blob);
      const flips = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < flips; k++) {
        const at = tailStart + Math.floor(rand() * (blob.length - tailStart));
        blob[at] = blob[at]! ^ (1 + Math.floor(rand() * 255));
      }
      const damaged = rand() < 0.2 ? blob.subarray(0, blob.length - Math.floor(rand() * 3000)) : blob;
      try {
        await openZstdChunked(new BufferSource(damaged), fx.annotations);
      } catch (err) {
        assert.ok(err instanceof ZstdChunkedError, `damage ${i}: ${String(err)}`);
        refusals++;
      }
    }
    assert.equal(refusals, 150, 'every damaged tail is refused: manifest and tar-split are covered by digests');
  });

  it('random type confusion in manifest entries: only ZstdChunkedError, never another throw', async () => {
    const fx = await loadZstdFixture();
    const rand = prng(1515);
    const keys = ['type', 'name', 'linkName', 'mode', 'size', 'uid', 'gid', 'modtime', 'devMajor', 'devMinor', 'xattrs', 'digest', 'offset', 'endOffset', 'chunkSize', 'chunkOffset', 'chunkDigest', 'chunkType'];
    const values: unknown[] = [null, -1, 0, 1, 2 ** 53, 1e300, 0.5, '', 'x', '../..', 'sha256:' + '0'.repeat(64), {}, [], { 'user.a': 'AAAA' }, { 'user.a': 5 }, true];
    let refused = 0;
    for (let i = 0; i < 40; i++) {
      const r = remake(fx, {
        manifest: (m) => {
          for (let k = 0; k < 1 + Math.floor(rand() * 2); k++) {
            const e = m.entries[Math.floor(rand() * m.entries.length)] as unknown as Record<string, unknown>;
            e[keys[Math.floor(rand() * keys.length)]!] = values[Math.floor(rand() * values.length)];
          }
        },
      });
      try {
        await openZstdChunked(new BufferSource(r.blob), r.annotations);
      } catch (err) {
        assert.ok(err instanceof ZstdChunkedError, `mutation ${i}: ${String(err)}`);
        refused++;
      }
    }
    assert.ok(refused > 20, `most mutations are refused (${refused} of 40)`);
  });
});
