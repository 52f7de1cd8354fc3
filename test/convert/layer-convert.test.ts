import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { BufferSource } from '../../src/estargz/source.js';
import { verifyBlob } from '../../src/estargz/verify.js';
import { convertLayer, type ConvertProgress } from '../../src/estargz/writer/convert.js';
import { makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';

function sink(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  return { stream: new Writable({ write(chunk: Buffer, _e, cb) { parts.push(chunk); cb(); } }), bytes: () => Buffer.concat(parts) };
}

/**
 * Many segments (4 MiB of members each): small files, files split in chunks,
 * incompressible and compressible payloads, so workers finish out of order
 * and segments go through spill files.
 */
function spec(): SpecEntry[] {
  const entries: SpecEntry[] = [{ name: 'd/', type: 'directory' }];
  for (let i = 0; i < 400; i++) entries.push({ name: `d/small-${i}`, type: 'file', content: Buffer.from(`file ${i}\n`.repeat(1 + (i % 50))) });
  entries.push({ name: 'd/random.bin', type: 'file', content: randomBytes(9 << 20, 7) });
  entries.push({ name: 'd/zeros.bin', type: 'file', content: Buffer.alloc(6 << 20) });
  for (let i = 0; i < 40; i++) entries.push({ name: `d/mid-${i}`, type: 'file', content: randomBytes(150_000, 100 + i) });
  entries.push({ name: 'd/link', type: 'symlink', linkname: 'small-1' });
  return entries;
}

describe('layer convert: parallel segments', () => {
  let dir: string;
  let tarPath: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'estargz-layerconv-'));
    tarPath = join(dir, 'layer.tar');
    await writeFile(tarPath, await makeLayerTar(spec()));
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  test('the blob does not depend on the number of workers; it verifies; progress ends at the totals', async () => {
    const blobs: Buffer[] = [];
    for (const concurrency of [1, 2, 4]) {
      const out = sink();
      let last: ConvertProgress | null = null;
      const r = await convertLayer(tarPath, out.stream, { concurrency, chunkSize: 1 << 20, level: 1, tmpDir: dir, onProgress: (p) => { last = { ...p }; } });
      const blob = out.bytes();
      assert.equal(r.digest, 'sha256:' + createHash('sha256').update(blob).digest('hex'));
      assert.equal(r.size, blob.length);
      assert.equal(gunzipSync(blob).length, r.uncompressedSize);
      const p = last as ConvertProgress | null;
      assert.ok(p);
      assert.equal(p.read, r.uncompressedSize);
      assert.equal(p.written, r.size);
      assert.equal(p.staged, p.tarBytes);
      blobs.push(blob);
    }
    assert.ok(blobs.every((b) => b.equals(blobs[0]!)), 'the workers changed the bytes');
    const summary = await verifyBlob(new BufferSource(blobs[0]!), {});
    assert.ok(summary.chunks > 20, `${summary.chunks} chunks`);
    // Only the caller's files remain: the staged copy and the spill files are gone.
    assert.deepEqual(await readdir(dir), ['layer.tar']);
  });

  test('a gzip input converts to the same blob as the plain tar', async () => {
    const gz = join(dir, 'layer.tar.gz');
    await writeFile(gz, gzipSync(await makeLayerTar(spec()), { level: 1 }));
    const a = sink();
    const b = sink();
    await convertLayer(tarPath, a.stream, { level: 1, tmpDir: dir });
    await convertLayer(gz, b.stream, { level: 1, tmpDir: dir });
    assert.ok(a.bytes().equals(b.bytes()));
    await rm(gz);
  });

  test('an output that fails: the conversion rejects (no worker left waiting) and removes its temporary files', async () => {
    let written = 0;
    const failing = new Writable({
      highWaterMark: 1 << 16,
      write(chunk: Buffer, _e, cb) {
        written += chunk.length;
        setImmediate(() => cb(written > 3 << 20 ? new Error('disk full') : null));
      },
    });
    failing.on('error', () => {});
    await assert.rejects(convertLayer(tarPath, failing, { concurrency: 3, level: 1, tmpDir: dir }), /disk full|destroyed|write after/);
    assert.deepEqual(await readdir(dir), ['layer.tar']);
  });
});
