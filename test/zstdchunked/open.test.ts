import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import type { LayerNode } from '../../src/estargz/layer-index.js';
import { BufferSource } from '../../src/estargz/source.js';
import { TarParser } from '../../src/estargz/tar/parser.js';
import { readZstdFileChunks } from '../../src/zstdchunked/file-chunks.js';
import type { CodedChunk } from '../../src/zstdchunked/layer-index.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { ZstdChunkedError } from '../../src/zstdchunked/errors.js';
import { rebuildTar } from '../../src/zstdchunked/tar-rebuild.js';
import { verifyZstdChunkedBlob } from '../../src/zstdchunked/verify.js';
import { loadTarTv, loadZstdFixture, zstdCliDecode } from './fixture.js';

function modeString(node: LayerNode): string {
  const type = node.type === 'dir' ? 'd' : node.type === 'symlink' ? 'l' : '-';
  let s = '';
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (node.mode >> shift) & 7;
    s += (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (bits & 1 ? 'x' : '-');
  }
  return type + s;
}

/** Every file's contents as tar -x would write them, from the tar the zstd command decodes. */
function filesOf(tar: Buffer): Map<string, Buffer> {
  const parser = new TarParser();
  const out = new Map<string, Buffer>();
  for (const e of parser.push(tar)) if (e.payloadSize > 0) out.set(e.header.name, tar.subarray(e.dataOffset, e.dataOffset + e.payloadSize));
  return out;
}

describe('zstd:chunked open (the podman-written fixture)', () => {
  it('opens the layer: footer, annotations, manifest checksum, tar-split, index', async () => {
    const fx = await loadZstdFixture();
    const blob = await openZstdChunked(new BufferSource(fx.blob), fx.annotations);
    assert.equal(blob.tocDigest, 'sha256:5e5082ff508349ed6f0f9e614fe719a847f028ea3c2324c3b9452bb0490f1c51');
    assert.deepEqual(blob.footer.manifest, { offset: 1048949, length: 2424, uncompressedLength: 9048 });
    assert.deepEqual(blob.footer.tarSplit, { offset: 1051381, length: 792, uncompressedLength: 16411 });
    assert.equal(blob.payloadEnd, 1048941);
    assert.equal(blob.manifestSize, 9048);
    const tar = await zstdCliDecode(fx.blobPath);
    assert.equal(blob.tarSize, tar.length, 'diff size from the tar-split = length of zstd -dc output');
  });

  it('lists what tar -tv lists: names, types, modes, sizes, link targets', async () => {
    const fx = await loadZstdFixture();
    const { index } = await openZstdChunked(new BufferSource(fx.blob), fx.annotations);
    const expected = await loadTarTv();
    const listed = index.records.map((r) => r.path + (r.node.type === 'dir' ? '/' : ''));
    assert.deepEqual(listed, expected.map((l) => l.name));
    for (const line of expected) {
      const node = index.byPath.get(line.name.replace(/\/$/, ''))!;
      assert.ok(node, line.name);
      assert.equal(modeString(node), line.mode, `${line.name} mode`);
      assert.equal(node.type === 'reg' ? node.size : 0, line.size, `${line.name} size`);
      assert.equal(node.type === 'symlink' ? node.linkName : undefined, line.link, `${line.name} link`);
      assert.equal(node.uid, 0);
      assert.equal(node.gid, 0);
      assert.equal(node.mtime, Date.parse('2026-12-06T18:01:33Z') / 1000);
    }
  });

  it('bin/busybox: chunks tile the file, each its own frame; decoded and verified they are the bytes zstd -dc gives', async () => {
    const fx = await loadZstdFixture();
    const source = new BufferSource(fx.blob);
    const { index, payloadEnd } = await openZstdChunked(source, fx.annotations);
    const node = index.byPath.get('bin/busybox')!;
    const chunks = node.chunks as CodedChunk[];
    assert.equal(chunks.length, 38);
    assert.deepEqual(new Set(chunks.map((c) => c.codec)), new Set(['zstd', 'zeros']));
    assert.equal(chunks.filter((c) => c.codec === 'zeros').length, 6);
    let end = 0;
    for (const c of chunks) {
      assert.equal(c.fileOffset, end);
      assert.equal(c.innerOffset, 0);
      assert.ok(c.blobOffset < c.blobEnd && c.blobEnd <= payloadEnd);
      end += c.size;
    }
    assert.equal(end, 1982256);
    assert.equal(chunks[0]!.blobOffset, 113);
    assert.equal(chunks.at(-1)!.blobEnd, 1048542);

    const expected = filesOf(await zstdCliDecode(fx.blobPath)).get('bin/busybox')!;
    const parts: Buffer[] = [];
    for await (const { bytes } of readZstdFileChunks(source, node)) parts.push(bytes);
    const got = Buffer.concat(parts);
    assert.ok(got.equals(expected), 'busybox bytes equal zstd -dc output');
    assert.equal('sha256:' + createHash('sha256').update(got).digest('hex'), node.digest);
  });

  it('rebuilds the layer tar from the tar-split and the verified contents: its sha256 is the diff_id', async () => {
    const fx = await loadZstdFixture();
    const source = new BufferSource(fx.blob);
    const blob = await openZstdChunked(source, fx.annotations);
    const hash = createHash('sha256');
    let bytes = 0;
    const contents = async function* (name: string): AsyncGenerator<Buffer> {
      const node = blob.index.byPath.get(name)!;
      for await (const { bytes: b } of readZstdFileChunks(source, node, name)) yield b;
    };
    for await (const piece of rebuildTar(blob.tarSplit, blob.tarSplitPosition, contents)) {
      hash.update(piece);
      bytes += piece.length;
    }
    assert.equal('sha256:' + hash.digest('hex'), fx.diffID);
    assert.equal(bytes, blob.tarSize);
  });
});

describe('zstd:chunked whole-layer verification', () => {
  it('verifies the fixture end to end: every chunk, and the rebuilt tar against the diff_id', async () => {
    const fx = await loadZstdFixture();
    const summary = await verifyZstdChunkedBlob(new BufferSource(fx.blob), fx.annotations, { diffID: fx.diffID });
    assert.deepEqual(summary, { tocDigest: fx.annotations['io.github.containers.zstd-chunked.manifest-checksum'], diffID: fx.diffID, files: 2, chunks: 39, tarBytes: (await zstdCliDecode(fx.blobPath)).length });
  });

  it('refuses a diff_id the rebuilt tar does not hash to', async () => {
    const fx = await loadZstdFixture();
    const wrong = 'sha256:' + 'e'.repeat(64);
    await assert.rejects(verifyZstdChunkedBlob(new BufferSource(fx.blob), fx.annotations, { diffID: wrong }), (err: unknown) =>
      err instanceof ZstdChunkedError && err.code === 'DIGEST_MISMATCH' && err.context.part === 'blob' && err.message.includes(`the diff_id is ${wrong}`));
  });
});
