// LayerError at the layers boundary: it keeps the layer (reference, digest),
// the path and the original code whatever room the failure came from, reads
// of a served layer come out wrapped, and the FUSE room maps it to EIO as it
// mapped the unwrapped errors before.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EngineError } from '../../src/engine/errors.js';
import { EstargzError } from '../../src/estargz/errors.js';
import type { LayerNode } from '../../src/estargz/layer-index.js';
import { Errno, toErrno } from '../../src/fs/errno.js';
import { BadNameError, decodeRefDir, encodeRefDir } from '../../src/fs/names.js';
import { LayerError, isLayerError, wrapLayerError } from '../../src/layers/errors.js';
import { LayerKey } from '../../src/layers/key.js';
import { parseStoreReference, referenceText } from '../../src/layers/names.js';
import { readerOf } from '../../src/layers/reader.js';
import { RegistryError } from '../../src/registry/errors.js';
import { ZstdChunkedError } from '../../src/zstdchunked/errors.js';
import { testLog } from '../../testkit/telemetry.js';

const KEY = new LayerKey(parseStoreReference('reg.example:5000/team/app@sha256:' + 'c'.repeat(64)), `sha256:${'a'.repeat(64)}`);

describe('LayerError', () => {
  test('keeps code and source of each room\'s error, and the layer', () => {
    const cases: [unknown, string, string][] = [
      [new RegistryError('UNAUTHORIZED', 'no', 401), 'registry', 'UNAUTHORIZED'],
      [new EstargzError('TOC_DIGEST_MISMATCH', 'toc'), 'estargz', 'TOC_DIGEST_MISMATCH'],
      [new ZstdChunkedError('NOT_ZSTD_CHUNKED', 'plain zstd', { part: 'annotations' }), 'zstd:chunked', 'NOT_ZSTD_CHUNKED'],
      [new EngineError('RETRIES_EXHAUSTED', 'gave up'), 'engine', 'RETRIES_EXHAUSTED'],
      // The resolver words some refusals itself and keeps the format's error as the cause.
      [new Error('layer refused: x', { cause: new ZstdChunkedError('MANIFEST_DIGEST_MISMATCH', 'x', { part: 'manifest' }) }), 'zstd:chunked', 'MANIFEST_DIGEST_MISMATCH'],
      [new TypeError('bug'), 'other', 'UNKNOWN'],
    ];
    for (const [cause, source, code] of cases) {
      const err = wrapLayerError('resolution', KEY, cause);
      assert.ok(isLayerError(err));
      assert.equal(err.source, source);
      assert.equal(err.code, code);
      assert.equal(err.ref, KEY.refText);
      assert.equal(err.digest, KEY.digest);
      assert.equal(err.cause, cause);
      assert.equal(err.message, (cause as Error).message);
    }
  });

  test('a LayerError is not wrapped twice', () => {
    const inner = new LayerError('read', KEY, new EngineError('CLOSED', 'closed'), 'etc/passwd');
    assert.equal(wrapLayerError('resolution', KEY, inner), inner);
  });

  test('reads of a served layer fail as LayerError with the path', async () => {
    const failing = {
      readFileParts: async () => { throw new EngineError('SHORT_READ', 'short', { path: 'usr/bin/x' }); },
      readBlobParts: async () => { throw new RegistryError('NETWORK', 'reset'); },
    };
    const reader = readerOf(KEY, failing as never);
    const node = { path: 'usr/bin/x' } as LayerNode;
    await assert.rejects(reader.readFileParts(node, 0, 10), (err: unknown) => {
      assert.ok(err instanceof LayerError);
      assert.deepEqual([err.stage, err.code, err.path, err.digest], ['read', 'SHORT_READ', 'usr/bin/x', KEY.digest]);
      return true;
    });
    await assert.rejects(reader.readBlobParts(0, 10), (err: unknown) => err instanceof LayerError && err.code === 'NETWORK' && err.path === 'blob');
    const ok = readerOf(KEY, { readFileParts: async () => [Buffer.from('h'), Buffer.from('i')], readBlobParts: async () => [Buffer.from('blob')] } as never);
    assert.equal(Buffer.concat(await ok.readFileParts(node, 0, 2)).toString(), 'hi');
  });

  test('the FUSE room maps it to EIO, resolution and read failures alike', () => {
    assert.equal(toErrno(new LayerError('resolution', KEY, new RegistryError('UNAUTHORIZED', 'no', 401)), 'lookup', '/x', testLog()), Errno.EIO);
    assert.equal(toErrno(new LayerError('read', KEY, new EngineError('SHORT_READ', 'short'), 'a'), 'read', '/x/a', testLog()), Errno.EIO);
    assert.equal(toErrno(new BadNameError('bad'), 'lookup', '/x', testLog()), Errno.EINVAL);
  });
});

describe('LayerKey and store names', () => {
  test('equal parts give equal keys; the parts are kept', () => {
    const ref = parseStoreReference('alpine:3');
    const a = new LayerKey(ref, KEY.digest);
    const b = new LayerKey(parseStoreReference('docker.io/library/alpine:3'), KEY.digest);
    assert.equal(a.toString(), b.toString());
    assert.equal(a.refText, 'docker.io/library/alpine:3');
    assert.equal(a.ref, ref);
    assert.equal(a.digest, KEY.digest);
    assert.ok(a.inRepository('docker.io', 'library/alpine'));
    assert.ok(!a.inRepository('docker.io', 'library/busybox'));
  });

  test('a store directory name decodes to the reference the layers room parses', () => {
    const text = 'reg.example:5000/team/app:1';
    const ref = decodeRefDir(encodeRefDir(text));
    assert.equal(referenceText(ref), text);
    assert.throws(() => decodeRefDir(encodeRefDir('UPPER/case')), BadNameError);
  });
});
