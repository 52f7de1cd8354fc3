import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { BufferSource } from '../../src/estargz/source.js';
import { ZstdChunkedError } from '../../src/zstdchunked/errors.js';
import { readZstdFileChunks } from '../../src/zstdchunked/file-chunks.js';
import type { CodedChunk } from '../../src/zstdchunked/layer-index.js';
import type { ManifestEntry } from '../../src/zstdchunked/manifest.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { verifyZstdChunkedBlob } from '../../src/zstdchunked/verify.js';
import { makeLayerTar, type SpecEntry } from '../../testkit/layer-tar.js';
import { writeZstdChunked } from '../../testkit/zstd-chunked-writer.js';

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A file with data, a run of zeros (a zeros chunk), and data again. */
const sparse = Buffer.concat([randomBytes(3000), Buffer.alloc(5000), randomBytes(9000)]);
const longName = `deep/${'d'.repeat(120)}/${'f'.repeat(90)}.txt`;
const spec: SpecEntry[] = [
  { name: 'etc', type: 'directory', mode: 0o755, mtime: 1700000000 },
  { name: 'etc/config', type: 'file', mode: 0o640, uid: 1000, gid: 1001, content: Buffer.from('key = value\n'), xattrs: { 'user.note': 'hello', 'security.capability': '\u0001\u0002' } },
  { name: 'etc/hard', type: 'link', linkname: 'etc/config' },
  { name: 'etc/empty', type: 'file', mode: 0o600, content: Buffer.alloc(0) },
  { name: 'bin', type: 'directory' },
  { name: 'bin/tool', type: 'file', mode: 0o4755, content: sparse },
  { name: 'bin/link', type: 'symlink', linkname: 'tool' },
  { name: 'dev', type: 'directory' },
  { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 },
  { name: 'dev/pipe', type: 'fifo', mode: 0o644 },
  { name: longName, type: 'file', content: randomBytes(70000) },
];

describe('zstd:chunked layers with every entry kind (written by the test writer, checked with the zstd command)', () => {
  it('hardlinks, xattrs, devices, fifos, empty files, long names, zeros chunks: indexed, read and rebuilt to the same tar', async () => {
    const tar = await makeLayerTar(spec);
    const { blob, annotations } = await writeZstdChunked(tar, { chunkSize: 8192 });
    // The writer's blob is what c/storage's would be: a zstd stream of the tar.
    assert.ok(execFileSync('zstd', ['-q', '-d', '-c'], { input: blob, maxBuffer: 64 << 20 }).equals(tar));

    const source = new BufferSource(blob);
    const opened = await openZstdChunked(source, annotations);
    const { index } = opened;
    assert.equal(opened.tarSize, tar.length);
    const config = index.byPath.get('etc/config')!;
    assert.equal(index.byPath.get('etc/hard'), config, 'a hardlink is the same node');
    assert.equal(config.nlink, 2);
    assert.equal(config.mode, 0o640);
    assert.equal(config.uid, 1000);
    assert.equal(config.gid, 1001);
    assert.deepEqual([...config.xattrs].map(([k, v]) => [k, v.toString('latin1')]).sort(), [['security.capability', '\u0001\u0002'], ['user.note', 'hello']]);
    const dev = index.byPath.get('dev/null')!;
    assert.deepEqual([dev.type, dev.devMajor, dev.devMinor, dev.mode], ['char', 1, 3, 0o666]);
    assert.equal(index.byPath.get('dev/pipe')!.type, 'fifo');
    assert.equal(index.byPath.get('bin/link')!.linkName, 'tool');
    assert.equal(index.byPath.get('bin/tool')!.mode, 0o4755);
    const empty = index.byPath.get('etc/empty')!;
    assert.deepEqual([empty.size, empty.chunks.length], [0, 0]);

    const tool = index.byPath.get('bin/tool')!;
    const codecs = (tool.chunks as CodedChunk[]).map((c) => c.codec);
    assert.ok(codecs.includes('zeros') && codecs.includes('zstd'), codecs.join(','));
    const parts: Buffer[] = [];
    for await (const { bytes } of readZstdFileChunks(source, tool)) parts.push(bytes);
    assert.ok(Buffer.concat(parts).equals(sparse));

    const long = index.byPath.get(longName)!;
    assert.equal(long.size, 70000);
    assert.ok(long.chunks.length > 1);

    const summary = await verifyZstdChunkedBlob(source, annotations, { diffID: sha(tar) });
    assert.equal(summary.tarBytes, tar.length);
    assert.equal(summary.files, 3, 'config, tool, the long-named file (the hardlink and the empty file have no contents)');
  });

  it('a manifest that disagrees with the tar on xattrs, a link, a type or a device number is refused', async () => {
    const tar = await makeLayerTar(spec);
    const cases: [(entries: ManifestEntry[]) => void, RegExp][] = [
      [(es) => { es.find((e) => e.name === 'etc/config')!.xattrs = { 'user.note': Buffer.from('hello').toString('base64') }; }, /"etc\/config" differs from the manifest's: xattrs differ/],
      [(es) => { es.find((e) => e.name === 'bin/link')!.linkName = 'other'; }, /"bin\/link" differs .*linkName "tool" != "other"/],
      [(es) => { es.find((e) => e.name === 'etc/hard')!.type = 'reg'; }, /"etc\/hard" differs .*type "hardlink" != "reg"/],
      [(es) => { es.find((e) => e.name === 'dev/null')!.devMinor = 5; }, /"dev\/null" differs .*device 1:3 != 1:5/],
      [(es) => { es.find((e) => e.name === 'dev/pipe')!.type = 'char'; }, /"dev\/pipe" differs .*type "fifo" != "char"/],
    ];
    for (const [alter, message] of cases) {
      const { blob, annotations } = await writeZstdChunked(tar, { chunkSize: 8192, alter });
      await assert.rejects(openZstdChunked(new BufferSource(blob), annotations), (err: unknown) => {
        assert.ok(err instanceof ZstdChunkedError, String(err));
        assert.equal(err.code, 'INVALID_TARSPLIT', err.message);
        assert.match(err.message, message);
        return true;
      });
    }
  });
});
