import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { freePort, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1 << 20;

/**
 * One eStargz image per case, each with content of its own (the store's
 * caches are keyed by chunk digest: shared content would be served from
 * them), named through a fault proxy of its own in front of the origin: the
 * proxy's host is the registry name the store's config gives mirrors for, and
 * it counts what the store sends to the origin itself.
 */
interface Case {
  /** In front of the origin; the registry name in the reference. */
  front: FaultProxy;
  ref: string;
  layer: string;
  files: Map<string, Buffer>;
}

function layerFiles(seed: number): SpecEntry[] {
  return [
    { name: 'data/', type: 'directory' },
    { name: 'data/hello.txt', type: 'file', content: Buffer.from(`hello from case ${seed}\n`) },
    { name: 'data/random.bin', type: 'file', content: randomBytes(3 * MiB + 5, seed) },
    { name: 'data/text.txt', type: 'file', content: Buffer.alloc(MiB, `case ${seed}: all work and no play `) },
  ];
}

async function makeCase(origin: Registry, name: string, seed: number): Promise<Case> {
  const files = layerFiles(seed);
  await pushTestImage(origin.host, `mirrors/${name}`, 'gzip', { layers: [files] });
  const conv = await run(process.execPath, [CLI, 'image', 'convert', `${origin.host}/mirrors/${name}:gzip`, `${origin.host}/mirrors/${name}:esgz`, '--chunk-size', String(256 << 10), '--json']);
  const layer = (JSON.parse(conv.stdout) as { manifests: { layers: { digest: string }[] }[] }).manifests[0]!.layers[0]!.digest;
  const front = await startFaultProxy(origin.url);
  return {
    front,
    ref: `${front.host}/mirrors/${name}:esgz`,
    layer,
    files: new Map(files.filter((f) => f.type === 'file').map((f) => [f.name, (f as { content: Buffer }).content])),
  };
}

/** Looks the layer up and reads every file through the mount; returns the milliseconds it took. */
async function readCase(store: RunningStore, c: Case): Promise<number> {
  const started = performance.now();
  const diff = join(store.layerDir(c.ref, c.layer), 'diff');
  assert.deepEqual((await readdir(join(diff, 'data'))).sort(), ['hello.txt', 'random.bin', 'text.txt']);
  for (const [name, content] of c.files) {
    assert.equal((await stat(join(diff, name))).size, content.length);
    assert.ok((await readFile(join(diff, name))).equals(content), `${name} has the pushed bytes`);
  }
  return performance.now() - started;
}

/** Warnings the store logged about a mirror being skipped. */
function mirrorDownLogs(store: RunningStore, mirrorHost: string): unknown[] {
  return store.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; mirror?: string })
    .filter((l) => l.msg?.startsWith('mirror unavailable') && l.mirror === `http://${mirrorHost}`);
}

const registryRequests = (p: FaultProxy) => p.requests.filter((r) => /\/(blobs|manifests)\//.test(r.path));

describe('the store with mirrors', () => {
  let origin: Registry;
  let pullThrough: Registry;
  /** In front of the pull-through cache: counts what the store asks the mirror. */
  let cacheFront: FaultProxy;
  /** Answers 503 to everything. */
  let sick: FaultProxy;
  /** A mirror that has manifests but no blobs (404). */
  let lacking: FaultProxy;
  let refusedHost: string;
  let store: RunningStore;
  const cases = {} as Record<'cache' | 'refused' | 'unavailable' | 'lacking', Case>;

  before(async () => {
    origin = await startRegistry();
    pullThrough = await startRegistry({ proxyOf: origin.url });
    cacheFront = await startFaultProxy(pullThrough.url);
    sick = await startFaultProxy(origin.url);
    sick.addFault({ kind: 'status', status: 503, times: Infinity });
    lacking = await startFaultProxy(origin.url);
    lacking.addFault({ kind: 'status', status: 404, path: '/blobs/', times: Infinity });
    refusedHost = `127.0.0.1:${await freePort()}`; // nothing listens there
    cases.cache = await makeCase(origin, 'cache', 101);
    cases.refused = await makeCase(origin, 'refused', 102);
    cases.unavailable = await makeCase(origin, 'unavailable', 103);
    cases.lacking = await makeCase(origin, 'lacking', 104);
    const mirrorOf = (c: Case, host: string) => [`[[resolver.host."${c.front.host}".mirrors]]`, `host = "${host}"`];
    // The store's default retry policy (5 retries from 30 ms), so that failover times are what a deployment sees.
    store = await startStore([
      'background_fetch_idle_sec = 3600', // keep background fetch out of the request counts
      ...mirrorOf(cases.cache, cacheFront.host),
      ...mirrorOf(cases.refused, refusedHost),
      ...mirrorOf(cases.unavailable, sick.host),
      ...mirrorOf(cases.lacking, lacking.host),
    ].join('\n'));
  });
  after(async () => {
    const code = await store?.stop();
    assert.equal(code, 0, 'the store exits cleanly on SIGTERM');
    for (const c of Object.values(cases)) await c.front.stop();
    for (const p of [cacheFront, sick, lacking]) await p?.stop();
    await pullThrough?.stop();
    await origin?.stop();
  });

  test('a pull-through cache (Distribution proxy mode) as the mirror: lookup and reads come through it, none from the origin directly', async () => {
    const c = cases.cache;
    await readCase(store, c);
    const blobGets = cacheFront.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    assert.ok(cacheFront.requests.some((r) => r.path.endsWith('/manifests/esgz') && r.status === 200), 'the manifest came from the mirror');
    assert.ok(blobGets.length > 0 && blobGets.every((r) => r.status === 200 || r.status === 206), JSON.stringify(blobGets.map((r) => r.status)));
    // Distribution 2.8 answers a ranged GET of a blob it does not hold yet with the whole blob (200): the
    // store kept the range it asked for (the footer) and read the right bytes above.
    const layerGets = blobGets.filter((r) => r.path.endsWith(`/blobs/${c.layer}`));
    assert.ok(layerGets[0]?.range !== undefined);
    assert.equal(layerGets[0]?.status, 200);
    assert.ok(cacheFront.requests.every((r) => r.url.includes(`ns=${encodeURIComponent(c.front.host)}`)), 'mirror requests name the origin registry');
    assert.deepEqual(c.front.requests, [], 'nothing went to the origin directly');
    // The cache filled itself from the origin.
    const originLog = (await origin.logLines()).join('\n');
    assert.ok(originLog.includes(`GET /v2/mirrors/cache/blobs/${c.layer}`));
    assert.equal(mirrorDownLogs(store, cacheFront.host).length, 0);
  });

  test('a mirror that refuses connections, listed first: lookup and reads go to the origin at once, and the mirror is skipped', async () => {
    const c = cases.refused;
    const ms = await readCase(store, c);
    // Each request that spent the retry budget on the dead mirror first waited ≥ 0.93 s (30 ms doubling, 5 times), and there are ≥ 5.
    assert.ok(ms < 4000, `lookup and reads took ${ms.toFixed(0)} ms`);
    const direct = registryRequests(c.front);
    assert.ok(direct.length >= 5, `${direct.length} requests to the origin`);
    assert.ok(direct.every((r) => r.status === 200 || r.status === 206));
    // Marked down at the first failure, then one probe per back-off period (1 s, doubling) at most.
    const warnings = mirrorDownLogs(store, refusedHost).length;
    assert.ok(warnings >= 1 && warnings <= 1 + Math.ceil(ms / 1000), `${warnings} mirror-down warnings in ${ms.toFixed(0)} ms`);
  });

  test('a mirror answering 503 to everything, listed first: the origin serves; the mirror gets a handful of requests, not one per read', async () => {
    const c = cases.unavailable;
    sick.reset();
    const ms = await readCase(store, c);
    assert.ok(ms < 4000, `lookup and reads took ${ms.toFixed(0)} ms`);
    const direct = registryRequests(c.front);
    assert.ok(direct.length >= 5, `${direct.length} requests to the origin`);
    assert.ok(sick.requests.length >= 1 && sick.requests.length <= 1 + Math.ceil(ms / 1000),
      `${sick.requests.length} requests to the mirror for ${direct.length} to the origin in ${ms.toFixed(0)} ms`);
    assert.ok(sick.requests.every((r) => r.status === 503));
  });

  test('a mirror answering 404 for blobs: each blob request falls back to the origin, and the mirror stays in use', async () => {
    const c = cases.lacking;
    lacking.reset();
    await readCase(store, c);
    const mirrorBlobGets = lacking.requests.filter((r) => r.path.includes('/blobs/'));
    const originBlobGets = c.front.requests.filter((r) => r.path.includes('/blobs/'));
    assert.ok(originBlobGets.length >= 3);
    assert.equal(mirrorBlobGets.length, originBlobGets.length, 'asked first every time');
    assert.ok(mirrorBlobGets.every((r) => r.status === 404));
    // The manifest is served by the mirror (it has it).
    assert.ok(lacking.requests.some((r) => r.path.endsWith('/manifests/esgz') && r.status === 200));
    assert.equal(mirrorDownLogs(store, lacking.host).length, 0);
  });
});
