import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { warmUp } from '../../src/daemon/warm-up.js';
import { Engine } from '../../src/engine/engine.js';
import { DEFAULT_CONFIG, engineOptions } from '../../src/daemon/config.js';
import { decodeChunk } from '../../src/estargz/chunk.js';
import { openEstargz } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { tocOnlyBlob } from '../../src/estargz/writer/toc-only-blob.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

const ZERO_DIGEST = `sha256:${'0'.repeat(64)}`;

describe('start-up warm-up', () => {
  test('a TOC-only blob opens with its entries, and its (zero) payload never verifies', async () => {
    const blob = tocOnlyBlob([
      { name: 'etc/', type: 'dir', mode: 0o755 },
      { name: 'etc/hostname', type: 'reg', size: 5, mode: 0o644, offset: 10, digest: ZERO_DIGEST, chunkDigest: ZERO_DIGEST },
      { name: 'etc/localtime', type: 'symlink', linkName: '/usr/share/zoneinfo/UTC' },
    ], 64);
    const opened = await openEstargz(new BufferSource(blob));
    assert.equal(opened.footer.tocOffset, 64);
    const file = opened.index.byPath.get('etc/hostname');
    assert.equal(file?.size, 5);
    assert.deepEqual(file?.chunks.map((c) => [c.blobOffset, c.blobEnd]), [[10, 64]]);
    assert.equal(opened.index.byPath.get('etc/localtime')?.linkName, '/usr/share/zoneinfo/UTC');
    const ref = { path: 'etc/hostname', fileOffset: 0, innerOffset: 0, size: 5, digest: ZERO_DIGEST, blobOffset: 10 };
    assert.throws(() => decodeChunk(blob.subarray(10, 64), ref, 'zlib'));
  });

  test('warmUp runs every step, and the engine decodes afterwards', async () => {
    const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { poolThreads: 2 }), testTelemetry());
    try {
      await warmUp(engine, testLog());
      const plain = Buffer.from('after the warm-up');
      const member = gzipSync(plain);
      const digest = `sha256:${createHash('sha256').update(plain).digest('hex')}`;
      const [out] = await engine.pool.run(new Uint8Array(member).buffer, [{ offset: 0, length: member.length, refs: [{ path: 'x', fileOffset: 0, innerOffset: 0, size: plain.length, digest, blobOffset: 0 }] }], 'foreground');
      assert.deepEqual(out, plain);
    } finally {
      await engine.close();
    }
  });
});
