import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, type Dispatcher } from 'undici';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient, type RepoRef } from '../../src/registry/client.js';
import { EndpointHealth } from '../../src/registry/endpoint-health.js';
import type { MirrorConfig } from '../../src/registry/hosts.js';
import { fetchManifest } from '../../src/registry/manifest.js';
import { pushBlob as clientPush } from '../../src/registry/push.js';
import { DEFAULT_RETRY, Transport } from '../../src/registry/transport.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes } from '../../testkit/layer-tar.js';
import { freePort, pushBlob, sha256Digest, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog } from '../../testkit/telemetry.js';

/** An undici Agent that counts the requests it is given, per origin (refused connections included). */
class CountingAgent extends Agent {
  readonly counts = new Map<string, number>();
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = String(opts.origin);
    this.counts.set(origin, (this.counts.get(origin) ?? 0) + 1);
    return super.dispatch(opts, handler);
  }
  count(host: string): number {
    return this.counts.get(`http://${host}`) ?? 0;
  }
}

/** A client with the daemon's default retry policy, so failover times are what a store would see. */
function mirroredClient(registry: string, mirrors: MirrorConfig[], opts: { now?: () => number; agent?: CountingAgent } = {}): RegistryClient {
  return new RegistryClient({ log: testLog(),
    resolver: { host: { [registry]: { mirrors } } },
    credentials: { name: 'none', lookup: async () => undefined },
    transport: new Transport(DEFAULT_RETRY, opts.agent ?? new Agent()),
    ...(opts.now && { now: opts.now }),
  });
}

const blobGets = (p: FaultProxy, digest: string) => p.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));

/** Polls a condition (the pull-through cache stores a blob in the background) instead of sleeping a fixed time. */
async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('EndpointHealth (mirror back-off)', () => {
  test('skipped after a failure, one probe when the period is over, doubling per failed probe, forgotten on success', () => {
    let now = 1000;
    const h = new EndpointHealth({ initialMs: 100, maxMs: 250 }, () => now);
    assert.equal(h.available('m'), true);
    assert.equal(h.report('m', 'down'), 100);
    assert.equal(h.available('m'), false);
    // Requests that were in flight when it went down do not lengthen the back-off.
    assert.equal(h.report('m', 'down'), undefined);
    now += 100;
    assert.equal(h.available('m'), true, 'the period is over: one probe');
    assert.equal(h.available('m'), false, 'others wait for the probe');
    assert.equal(h.report('m', 'down'), 200);
    now += 199;
    assert.equal(h.available('m'), false);
    now += 1;
    assert.equal(h.available('m'), true);
    assert.equal(h.report('m', 'down'), 250, 'capped at maxMs');
    now += 250;
    assert.equal(h.available('m'), true);
    assert.equal(h.report('m', 'unknown'), undefined, 'an aborted probe says nothing');
    assert.equal(h.available('m'), true, 'so the next request probes');
    assert.equal(h.report('m', 'up'), undefined);
    assert.equal(h.isDown('m'), false);
    assert.equal(h.available('m'), true);
    assert.equal(h.available('other'), true, 'per endpoint');
  });
});

describe('mirrors in front of a real registry', () => {
  let origin: Registry;
  /** In front of the origin: the client's name for the registry, so that direct requests are counted. */
  let front: FaultProxy;
  let pullThrough: Registry;
  let mirror: FaultProxy;
  const blob = randomBytes(2 << 20, 11);
  let digest: string;
  const repo = (): RepoRef => ({ registry: front.host, repository: 'mirrored/blob' });

  before(async () => {
    origin = await startRegistry();
    front = await startFaultProxy(origin.url);
    // The cache talks to the origin directly: `front` sees only what the client sends there itself.
    pullThrough = await startRegistry({ proxyOf: origin.url });
    mirror = await startFaultProxy(pullThrough.url);
    digest = await pushBlob(origin.url, 'mirrored/blob', blob);
  });
  after(async () => {
    await mirror?.stop();
    await pullThrough?.stop();
    await front?.stop();
    await origin?.stop();
  });

  test('Distribution 2.8 pull-through: a blob it does not hold yet comes whole (200) to a ranged GET; once stored, in ranges (206)', async () => {
    const data = randomBytes(1 << 20, 12);
    const d = await pushBlob(origin.url, 'facts/blob', data);
    const url = `${pullThrough.url}/v2/facts/blob/blobs/${d}`;
    const first = await fetch(url, { headers: { range: 'bytes=10-19' } });
    assert.equal(first.status, 200);
    assert.deepEqual(Buffer.from(await first.arrayBuffer()), data);
    await waitFor('the cache to store the blob', async () => {
      const res = await fetch(url, { headers: { range: 'bytes=10-19' } });
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status !== 206) return false;
      assert.deepEqual(body, data.subarray(10, 20));
      return true;
    });
    const multi = await fetch(url, { headers: { range: 'bytes=0-9,500-509' } });
    assert.equal(multi.status, 206);
    assert.match(multi.headers.get('content-type') ?? '', /^multipart\/byteranges/);
    await multi.arrayBuffer();
  });

  test('reads through a pull-through mirror: the first (answered 200, whole) keeps the asked ranges; later ones are ranged; the origin is not asked directly', async () => {
    const c = mirroredClient(front.host, [{ host: mirror.host }]);
    try {
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      const ranges = [{ offset: 5, length: 100 }, { offset: 1 << 20, length: 4096 }, { offset: blob.length - 10, length: 10 }];
      assert.deepEqual(await b.readRanges(ranges), ranges.map((r) => blob.subarray(r.offset, r.offset + r.length)));
      const gets = blobGets(mirror, digest);
      assert.equal(gets[0]?.status, 200, 'the cache did not hold it: whole blob');
      assert.equal(gets[0]?.bytes, blob.length);
      assert.ok(gets.every((r) => r.url.includes(`ns=${encodeURIComponent(front.host)}`)));
      await waitFor('the cache to store the blob', async () => (await fetch(`${pullThrough.url}/v2/mirrored/blob/blobs/${digest}`, { method: 'HEAD' })).status === 200
        && (await fetch(`${pullThrough.url}/v2/mirrored/blob/blobs/${digest}`, { headers: { range: 'bytes=0-0' } }).then(async (r) => { await r.arrayBuffer(); return r.status === 206; })));
      mirror.reset();
      assert.deepEqual(await b.read(300_000, 777), blob.subarray(300_000, 300_777));
      assert.deepEqual(mirror.requests.map((r) => [r.status, r.bytes]), [[206, 777]]);
      assert.equal(front.requests.filter((r) => r.path.includes('/blobs/')).length, 0, 'no blob request went to the origin directly');
      assert.equal(c.mirrorHealth.isDown(`http://${mirror.host}`), false);
    } finally {
      await c.close();
    }
  });

  test('manifests come through the pull-through mirror too', async () => {
    const image = await pushTestImage(origin.host, 'mirrored/image', 'v1', { layers: [[{ name: 'a', type: 'file', content: Buffer.from('a') }]] });
    const c = mirroredClient(front.host, [{ host: mirror.host }]);
    try {
      front.reset();
      mirror.reset();
      const m = await fetchManifest(c, { registry: front.host, repository: 'mirrored/image' }, 'v1');
      assert.equal(m.digest, image.manifestDigest);
      assert.ok(mirror.requests.some((r) => r.path.endsWith('/manifests/v1') && r.status === 200));
      assert.equal(front.requests.length, 0);
    } finally {
      await c.close();
    }
  });

  test('a mirror with nothing listening (connection refused): the next host at once, without retries; then skipped', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const agent = new CountingAgent();
    const c = mirroredClient(front.host, [{ host: dead }], { agent });
    try {
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      const started = performance.now();
      assert.deepEqual(await b.read(100, 1000), blob.subarray(100, 1100));
      const ms = performance.now() - started;
      // With the retry budget spent on the mirror first (5 retries from 30 ms, doubling, plus jitter), this took ≥ 930 ms.
      assert.ok(ms < 600, `failover took ${ms.toFixed(0)} ms`);
      assert.equal(agent.count(dead), 1, 'one connection attempt, no retries');
      for (let i = 0; i < 20; i++) assert.deepEqual(await b.read(i * 1000, 10), blob.subarray(i * 1000, i * 1000 + 10));
      assert.equal(agent.count(dead), 1, 'skipped while it is down');
      assert.equal(agent.count(front.host), 21);
      assert.equal(c.mirrorHealth.isDown(`http://${dead}`), true);
    } finally {
      await c.close();
    }
  });

  test('a mirror answering 503: the next host at once; skipped for a back-off that doubles; used again once it answers', async () => {
    const sick = await startFaultProxy(pullThrough.url);
    const fault = sick.addFault({ kind: 'status', status: 503, times: Infinity });
    let now = 0;
    const c = mirroredClient(front.host, [{ host: sick.host }], { now: () => now });
    try {
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      const started = performance.now();
      assert.deepEqual(await b.read(0, 64), blob.subarray(0, 64));
      assert.ok(performance.now() - started < 600, 'no retry waits before the failover');
      assert.equal(sick.requests.length, 1, 'no retries against the mirror');
      for (let i = 1; i <= 10; i++) assert.deepEqual(await b.read(i * 4096, 64), blob.subarray(i * 4096, i * 4096 + 64));
      assert.equal(sick.requests.length, 1, 'skipped during the back-off');
      now += 1000; // the first back-off is over: one probe, which fails again
      await b.read(1, 1);
      await b.read(2, 1);
      assert.equal(sick.requests.length, 2);
      now += 1000; // the second back-off is 2 s
      await b.read(3, 1);
      assert.equal(sick.requests.length, 2);
      fault.remaining = 0; // the mirror recovers
      now += 1000;
      assert.deepEqual(await b.read(4, 4), blob.subarray(4, 8));
      assert.deepEqual(await b.read(8, 4), blob.subarray(8, 12));
      assert.equal(sick.requests.length, 4, 'back in use: every request goes to it');
      assert.deepEqual(sick.requests.slice(2).map((r) => r.status), [206, 206]);
    } finally {
      await c.close();
      await sick.stop();
    }
  });

  test('a mirror answering 404 for a blob: the next host, and the mirror stays in use (it is up, it only lacks that blob)', async () => {
    const lacking = await startFaultProxy(pullThrough.url);
    lacking.addFault({ kind: 'status', status: 404, path: '/blobs/', times: Infinity });
    const c = mirroredClient(front.host, [{ host: lacking.host }]);
    try {
      front.reset();
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      for (let i = 0; i < 3; i++) assert.deepEqual(await b.read(i * 100, 50), blob.subarray(i * 100, i * 100 + 50));
      assert.equal(lacking.requests.length, 3);
      assert.equal(blobGets(front, digest).length, 3);
      assert.equal(c.mirrorHealth.isDown(`http://${lacking.host}`), false);
    } finally {
      await c.close();
      await lacking.stop();
    }
  });

  test('a mirror whose body breaks once is retried once (a fluke of one connection), not abandoned', async () => {
    const flaky = await startFaultProxy(pullThrough.url);
    const fault = flaky.addFault({ kind: 'reset-mid-body', afterBytes: 1000, path: '/blobs/' });
    const c = mirroredClient(front.host, [{ host: flaky.host }]);
    try {
      front.reset();
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      assert.deepEqual(await b.read(10_000, 50_000), blob.subarray(10_000, 60_000));
      assert.equal(fault.hits, 1);
      assert.deepEqual(blobGets(flaky, digest).map((r) => r.status), [206, 206]);
      assert.equal(front.requests.length, 0);
      assert.equal(c.mirrorHealth.isDown(`http://${flaky.host}`), false);
    } finally {
      await c.close();
      await flaky.stop();
    }
  });

  test('several mirrors: a dead one, then a working one, then the origin — the working mirror serves', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const c = mirroredClient(front.host, [{ host: dead }, { host: mirror.host }]);
    try {
      front.reset();
      mirror.reset();
      const b = await RemoteBlob.open(c, repo(), digest, { expectedSize: blob.length });
      const started = performance.now();
      assert.deepEqual(await b.read(1234, 5678), blob.subarray(1234, 1234 + 5678));
      assert.ok(performance.now() - started < 600, 'no retry waits before the failover');
      assert.equal(blobGets(mirror, digest).length, 1);
      assert.equal(front.requests.length, 0);
    } finally {
      await c.close();
    }
  });

  test('pushes never go to a mirror; a mirror that is down costs a push nothing', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const agent = new CountingAgent();
    const c = mirroredClient(front.host, [{ host: dead }], { agent });
    try {
      const data = randomBytes(1000, 13);
      assert.deepEqual(await clientPush(c, { registry: front.host, repository: 'mirrored/push' }, sha256Digest(data), { bytes: data }), { how: 'uploaded' });
      assert.equal(agent.count(dead), 0);
    } finally {
      await c.close();
    }
  });
});
