// The resolver reads a layer's tail while the image's manifest is still on
// the way (a suffix range on the blob the directory names), so the first
// lookup of an image costs one round trip less before its TOC. What that
// early read returns is used only when the manifest vouches for it (a gzip
// layer of that digest and size) and is checked like any read: a registry
// that ignores the range, bytes flipped on the way, or a directory named by
// a TOC digest all end in the layer resolved as before, from its own reads.
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { LayerKey } from '../../src/layers/key.js';
import { DEFAULT_RESOLVER, LayerResolver } from '../../src/layers/resolver.js';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { startFaultProxy, type FaultProxy, type ProxyRequestRecord } from '../../testkit/fault-proxy.js';
import { loadFixture, type FixtureMeta } from '../../testkit/fixtures.js';
import { makeLayerTar, randomBytes } from '../../testkit/layer-tar.js';
import { pushOneLayerImage, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

const TAIL = 64 << 10;

describe('resolver: the tail read while the manifest is on the way', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let engine: Engine;
  const images: Record<'small' | 'large', { meta: Pick<FixtureMeta, 'size' | 'tocDigest'>; digest: string; ref: string }> = {} as never;

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url, { seed: 7 });
    const push = async (which: 'small' | 'large', blob: Buffer, diffID: string, tocDigest: string): Promise<void> => {
      const digest = await pushOneLayerImage(reg.url, `early/${which}`, 'v1', { blob, diffID, annotations: { 'containerd.io/snapshot/stargz/toc.digest': tocDigest } });
      images[which] = { meta: { size: blob.length, tocDigest }, digest, ref: `${proxy.host}/early/${which}:v1` };
    };
    // The basic fixture: its TOC is inside the last 64 KiB.
    const { meta, blob } = await loadFixture('basic');
    await push('small', blob, meta.diffID, meta.tocDigest);
    // 3,000 files: a TOC member of some 200 KB, so a TOC read follows the tail.
    const files = Array.from({ length: 3000 }, (_, i) => ({ name: `many/f${i}`, type: 'file' as const, content: randomBytes(16, i) }));
    const parts: Buffer[] = [];
    const converted = await convertLayer(Readable.from([await makeLayerTar(files)]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), { level: 1 });
    await push('large', Buffer.concat(parts), converted.diffID, converted.tocDigest);
    engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { fetch: { noPrefetch: true, noBackgroundFetch: true } }), testTelemetry());
  });
  after(async () => {
    await engine.close();
    await proxy.stop();
    await reg.stop();
  });
  beforeEach(() => {
    proxy.clearFaults();
    proxy.reset();
  });

  /** Resolves `<ref>/<dirDigest>` with a new resolver (no manifest at hand) and checks what it serves. */
  async function resolve(which: 'small' | 'large', dirDigest?: string): Promise<ProxyRequestRecord[]> {
    const { meta, digest, ref } = images[which];
    const client = new RegistryClient({ log: testLog(), retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 50 }, credentials: { name: 'none', lookup: async () => undefined } });
    try {
      const opened = await new LayerResolver(client, engine, testLog(), DEFAULT_RESOLVER).open(new LayerKey(parseReference(ref), dirDigest ?? digest));
      try {
        assert.equal(opened.layer.tocDigest, meta.tocDigest);
        assert.equal(opened.layer.blobSize, meta.size);
        assert.equal(opened.layer.descriptor.digest, digest);
      } finally {
        await opened.handle.close();
      }
    } finally {
      await client.close();
    }
    return [...proxy.requests];
  }

  const blobGets = (rs: ProxyRequestRecord[], digest: string): ProxyRequestRecord[] => rs.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));
  const manifestAt = (rs: ProxyRequestRecord[]): number => rs.findIndex((r) => r.path.includes('/manifests/'));

  test('named by its layer digest: the suffix range goes out before the manifest is back, and is the only tail read', async () => {
    // The manifest answers late: the tail request must arrive meanwhile.
    proxy.addFault({ path: '/manifests/', kind: 'delay', ms: 300 });
    const { digest, meta } = images.small;
    const rs = await resolve('small');
    const reads = blobGets(rs, digest);
    assert.deepEqual(reads.map((r) => r.range), [`bytes=-${TAIL}`], 'one read of the blob, the suffix range: the TOC was inside it');
    const config = rs.findIndex((r) => r.path.includes('/blobs/') && !r.path.endsWith(digest));
    assert.ok(manifestAt(rs) >= 0 && config > manifestAt(rs));
    // Arrival order: manifest, then the tail while the manifest waited, then the config (which needs the manifest).
    assert.ok(rs.indexOf(reads[0]!) < config, `order: ${rs.map((r) => `${r.method} ${r.path.split('/').pop()} ${r.range ?? ''}`).join(' | ')}`);
    assert.equal(reads[0]!.status, 206);
    assert.equal(reads[0]!.bytes, Math.min(TAIL, meta.size));
  });

  test('a TOC outside the tail: the early tail, then one read of the TOC', async () => {
    const { digest, meta } = images.large;
    const reads = blobGets(await resolve('large'), digest);
    assert.equal(reads.length, 2, `reads: ${reads.map((r) => r.range).join(', ')}`);
    assert.equal(reads[0]!.range, `bytes=-${TAIL}`);
    const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(reads[1]!.range ?? '') ?? [];
    assert.ok(Number(from) < meta.size - TAIL && Number(to) < meta.size - 1, `TOC read ${reads[1]!.range} of a ${meta.size}-byte blob`);
  });

  test('a registry that ignores the suffix range: its 200 is dropped and the tail read by offset', async () => {
    const { digest, meta } = images.large;
    proxy.addFault({ path: (r) => r.headers.range === `bytes=-${TAIL}`, kind: 'ignore-range' });
    const reads = blobGets(await resolve('large'), digest);
    const ignored = reads.find((r) => r.range === `bytes=-${TAIL}`)!;
    assert.equal(ignored.status, 200);
    assert.ok(reads.some((r) => r.range === `bytes=${meta.size - TAIL}-${meta.size - 1}`), `reads: ${reads.map((r) => r.range).join(', ')}`);
  });

  test('bytes flipped in the early tail: the TOC fails its digest, is read again, and the layer resolves', async () => {
    const { digest } = images.small;
    const flip = proxy.addFault({ path: (r) => r.headers.range === `bytes=-${TAIL}`, kind: 'flip-bytes', count: 64 });
    const reads = blobGets(await resolve('small'), digest);
    assert.equal(flip.hits, 1);
    assert.ok(reads.length >= 2, `reads: ${reads.map((r) => r.range).join(', ')}`);
  });

  test('named by its TOC digest (podman ≥ 5.1): the early read finds no blob and changes nothing', async () => {
    const { meta, digest } = images.small;
    const rs = await resolve('small', meta.tocDigest);
    const wasted = rs.filter((r) => r.path.endsWith(`/blobs/${meta.tocDigest}`));
    assert.deepEqual(wasted.map((r) => r.status), [404]);
    assert.equal(blobGets(rs, digest).length, 1);
  });

  test('a manifest at hand: no early read (the resolver reads the tail by offset)', async () => {
    const { digest, ref } = images.small;
    const { meta } = images.small;
    const client = new RegistryClient({ log: testLog(), retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 50 }, credentials: { name: 'none', lookup: async () => undefined } });
    const resolver = new LayerResolver(client, engine, testLog(), DEFAULT_RESOLVER);
    try {
      await (await resolver.open(new LayerKey(parseReference(ref), digest))).handle.close();
      proxy.reset();
      const opened = await resolver.open(new LayerKey(parseReference(ref), digest));
      await opened.handle.close();
      assert.equal(manifestAt(proxy.requests), -1);
      assert.deepEqual(blobGets(proxy.requests, digest).map((r) => r.range), [`bytes=${meta.size - TAIL}-${meta.size - 1}`]);
    } finally {
      await client.close();
    }
  });
});
