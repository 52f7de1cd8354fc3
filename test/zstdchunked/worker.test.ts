import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DecodePool } from '../../src/engine/decode-pool.js';
import { BufferSource } from '../../src/estargz/source.js';
import type { CodedChunk } from '../../src/zstdchunked/layer-index.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import type { DecodeItem } from '../../workers/decode-types.js';
import { loadZstdFixture, zstdCliDecode } from './fixture.js';
import { testTelemetry } from '../../testkit/telemetry.js';

/** The chunk-loader's way: a span's frames in one transferred buffer, one item per frame, refs with their codec. */
function taskOf(blob: Buffer, chunks: CodedChunk[], path: string): { buffer: ArrayBuffer; items: DecodeItem[] } {
  const start = chunks[0]!.blobOffset;
  const end = chunks.at(-1)!.blobEnd;
  const copy = Buffer.allocUnsafeSlow(end - start);
  blob.copy(copy, 0, start, end);
  return {
    buffer: copy.buffer as ArrayBuffer,
    items: chunks.map((c) => ({
      offset: c.blobOffset - start,
      length: c.blobEnd - c.blobOffset,
      refs: [{ path, fileOffset: c.fileOffset, innerOffset: c.innerOffset, size: c.size, digest: c.digest, blobOffset: c.blobOffset, codec: c.codec }],
    })),
  };
}

describe('zstd chunks in the decode pool', () => {
  for (const threads of [0, 1]) {
    it(`${threads ? 'a worker thread' : 'on-thread mode'}: every chunk of bin/busybox (zstd and zeros, small and large) decodes and verifies to the bytes zstd -dc gives`, async () => {
      const fx = await loadZstdFixture();
      const { index } = await openZstdChunked(new BufferSource(fx.blob), fx.annotations);
      const node = index.byPath.get('bin/busybox')!;
      const chunks = node.chunks as CodedChunk[];
      const tar = await zstdCliDecode(fx.blobPath);
      const pool = new DecodePool(testTelemetry(), { threads });
      try {
        // Two tasks, as two spans would be.
        const half = 19;
        const first = taskOf(fx.blob, chunks.slice(0, half), 'bin/busybox');
        const second = taskOf(fx.blob, chunks.slice(half), 'bin/busybox');
        const outputs = [
          ...await pool.run(first.buffer, first.items, 'foreground'),
          ...await pool.run(second.buffer, second.items, 'background'),
        ];
        assert.equal(outputs.length, chunks.length);
        const parts = outputs.map((o, i) => {
          assert.ok(Buffer.isBuffer(o), `chunk ${i}: ${JSON.stringify(o)}`);
          assert.equal(o.length, chunks[i]!.size);
          return o;
        });
        const start = tar.indexOf(Buffer.from('\x7fELF'));
        assert.ok(Buffer.concat(parts).equals(tar.subarray(start, start + node.size)));
      } finally {
        await pool.close();
      }
    });
  }

  it('a worker reports a bad zstd chunk with its code and where it is, and decodes its neighbours', async () => {
    const fx = await loadZstdFixture();
    const { index } = await openZstdChunked(new BufferSource(fx.blob), fx.annotations);
    const chunks = (index.byPath.get('bin/busybox')!.chunks as CodedChunk[]).slice(2, 5);
    const { buffer, items } = taskOf(fx.blob, chunks, 'bin/busybox');
    const view = new Uint8Array(buffer);
    const at = items[1]!.offset + 20;
    view[at] = view[at]! ^ 0xff;
    const pool = new DecodePool(testTelemetry(), { threads: 1 });
    try {
      const out = await pool.run(buffer, items, 'foreground');
      assert.ok(Buffer.isBuffer(out[0]) && Buffer.isBuffer(out[2]));
      const bad = out[1] as { code: string; message: string };
      assert.ok(bad.code === 'CHUNK_CORRUPT' || bad.code === 'CHUNK_DIGEST_MISMATCH', bad.code);
      assert.match(bad.message, /chunk of "bin\/busybox" at file offset 42303 \(blob offset 12535\)/);
    } finally {
      await pool.close();
    }
  });
});
