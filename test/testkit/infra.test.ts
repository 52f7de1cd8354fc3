// Self-tests of the registry test infrastructure: a real Distribution 2.8
// (Debian docker-registry) with no auth, htpasswd and token auth, our token
// server, and the fault-injecting proxy. Needs the Debian packages
// docker-registry, apache2-utils and openssl; fails (does not skip) without them.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import {
  basicAuth,
  fetchToken,
  parseChallenge,
  pushBlob,
  putManifest,
  registryFetch,
  sha256Digest,
  startRegistry,
  type Registry,
} from '../../testkit/registry.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';

const REPO = 'infra/blob';

async function bytesOf(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

describe('registry: no auth', () => {
  let reg: Registry;
  before(async () => {
    reg = await startRegistry();
  });
  after(() => reg.stop());

  test('answers /v2/ and logs', async () => {
    const res = await fetch(`${reg.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.match(reg.host, /^127\.0\.0\.1:\d+$/);
    const lines = await reg.logLines();
    assert.ok(lines.some((l) => l.includes('/v2/')), `no access log line in:\n${lines.join('\n')}`);
  });

  test('blob push then GET and HEAD', async () => {
    const data = randomBytes(4096);
    const digest = await pushBlob(reg.url, REPO, data);
    const got = await fetch(`${reg.url}/v2/${REPO}/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.deepEqual(await bytesOf(got), data);
    const head = await fetch(`${reg.url}/v2/${REPO}/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(data.length));
  });

  test('manifest push and pull', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const configDigest = await pushBlob(reg.url, REPO, config);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [],
    });
    const digest = await putManifest(reg.url, REPO, 'v1', manifest);
    const got = await fetch(`${reg.url}/v2/${REPO}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(got.status, 200);
    assert.equal(got.headers.get('docker-content-digest'), digest);
    assert.equal(await got.text(), manifest);
  });

  test('stop() kills the registry and removes its directory', async () => {
    const tmp = await startRegistry();
    await tmp.stop();
    await assert.rejects(fetch(`${tmp.url}/v2/`));
    await assert.rejects(access(tmp.dataDir));
  });
});

describe('registry: htpasswd', () => {
  let reg: Registry;
  before(async () => {
    reg = await startRegistry({ auth: 'htpasswd', users: { alice: 's3cret' } });
  });
  after(() => reg.stop());

  test('401 without credentials, 200 with, 401 with a wrong password', async () => {
    const anon = await fetch(`${reg.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    const ok = await fetch(`${reg.url}/v2/`, { headers: { authorization: basicAuth({ username: 'alice', password: 's3cret' }) } });
    assert.equal(ok.status, 200);
    const bad = await fetch(`${reg.url}/v2/`, { headers: { authorization: basicAuth({ username: 'alice', password: 'nope' }) } });
    assert.equal(bad.status, 401);
    assert.deepEqual(reg.credentials, { username: 'alice', password: 's3cret' });
  });
});

describe('registry: token auth', () => {
  let reg: Registry;
  const creds = { username: 'bob', password: 'hunter2' };
  before(async () => {
    reg = await startRegistry({ auth: 'token', users: { bob: 'hunter2' } });
  });
  after(() => reg.stop());

  test('challenge points at the token server', async () => {
    const res = await fetch(`${reg.url}/v2/`);
    assert.equal(res.status, 401);
    const ch = parseChallenge(res.headers.get('www-authenticate') ?? '');
    assert.equal(ch['realm'], reg.token?.realm);
    assert.equal(ch['service'], reg.token?.service);
  });

  test('token flow grants push+pull; blob upload and download work', async () => {
    const token = reg.token!;
    token.requests.length = 0;
    const data = randomBytes(10_000);
    const digest = await pushBlob(reg.url, REPO, data, creds);
    const got = await registryFetch(`${reg.url}/v2/${REPO}/blobs/${digest}`, {}, creds);
    assert.equal(got.status, 200);
    assert.deepEqual(await bytesOf(got), data);
    assert.ok(
      // Distribution lists the actions of its challenge in no fixed order.
      token.requests.some((r) => [`repository:${REPO}:pull,push`, `repository:${REPO}:push,pull`].includes(r.scope ?? '') && r.account === 'bob' && r.authorized),
      JSON.stringify(token.requests),
    );
    assert.ok(token.requests.some((r) => r.scope === `repository:${REPO}:pull` && r.authorized));
  });

  test('wrong password: 401 from the token server', async () => {
    const u = new URL(reg.token!.realm);
    u.searchParams.set('service', reg.token!.service);
    u.searchParams.set('scope', `repository:${REPO}:pull`);
    const res = await fetch(u, { headers: { authorization: basicAuth({ username: 'bob', password: 'wrong' }) } });
    assert.equal(res.status, 401);
    assert.equal(reg.token!.requests.at(-1)?.authorized, false);
  });

  test('anonymous token has no access; OAuth2 POST password grant works', async () => {
    const data = randomBytes(100);
    const url = `${reg.url}/v2/${REPO}/blobs/${await pushBlob(reg.url, REPO, data, creds)}`;
    const challenge = (await fetch(url)).headers.get('www-authenticate') ?? '';
    const anonToken = await fetchToken(challenge, undefined);
    const denied = await fetch(url, { headers: { authorization: `Bearer ${anonToken}` } });
    assert.equal(denied.status, 401);
    assert.match(denied.headers.get('www-authenticate') ?? '', /insufficient_scope/);

    const form = new URLSearchParams({
      grant_type: 'password',
      username: 'bob',
      password: 'hunter2',
      service: reg.token!.service,
      scope: `repository:${REPO}:pull`,
      client_id: 'infra-test',
    });
    const tok = await fetch(reg.token!.realm, { method: 'POST', body: form });
    assert.equal(tok.status, 200);
    const { access_token } = (await tok.json()) as { access_token: string };
    const ok = await fetch(url, { headers: { authorization: `Bearer ${access_token}` } });
    assert.equal(ok.status, 200);
    assert.deepEqual(await bytesOf(ok), data);
  });

  test('fault proxy redirect carries the token to the registry, not the client', async () => {
    const proxy = await startFaultProxy(reg.url);
    try {
      const data = randomBytes(3000);
      const digest = await pushBlob(proxy.url, REPO, data, creds);
      proxy.addFault({ kind: 'redirect', path: /\/blobs\/sha256:/, method: 'GET' });
      // fetch drops Authorization on the cross-origin redirect (Fetch spec), as a client must.
      const got = await registryFetch(`${proxy.url}/v2/${REPO}/blobs/${digest}`, {}, creds);
      assert.equal(got.status, 200);
      assert.deepEqual(await bytesOf(got), data);
      const signed = proxy.requests.filter((r) => r.signed);
      assert.equal(signed.length, 1);
      assert.equal(signed[0]?.listener, 'other');
      assert.equal(signed[0]?.authorization, false);
    } finally {
      await proxy.stop();
    }
  });
});

describe('fault proxy', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  const blob = randomBytes(256 * 1024);
  let digest: string;
  let blobPath: string;

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    // Pushed through the proxy: the registry's absolute upload Location must be rewritten to the proxy.
    digest = await pushBlob(proxy.url, REPO, blob);
    blobPath = `/v2/${REPO}/blobs/${digest}`;
    assert.ok(proxy.requests.every((r) => r.listener === 'main'));
    assert.ok(proxy.requests.some((r) => r.method === 'PUT' && r.status === 201));
  });
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  test('503 once, then pass-through; the log counts both', async () => {
    proxy.reset();
    const fault = proxy.addFault({ kind: 'status', status: 503, path: blobPath });
    const first = await fetch(proxy.url + blobPath);
    assert.equal(first.status, 503);
    await first.arrayBuffer();
    const second = await fetch(proxy.url + blobPath);
    assert.equal(second.status, 200);
    assert.deepEqual(await bytesOf(second), blob);
    assert.equal(fault.hits, 1);
    assert.equal(fault.remaining, 0);
    assert.deepEqual(
      proxy.requests.map((r) => [r.method, r.path, r.status, r.fault ?? null]),
      [
        ['GET', blobPath, 503, 'status'],
        ['GET', blobPath, 200, null],
      ],
    );
    assert.equal(proxy.requests[1]?.bytes, blob.length);
    assert.equal(proxy.requests[1]?.complete, true);
  });

  test('429 with retry-after', async () => {
    proxy.addFault({ kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    const res = await fetch(`${proxy.url}/v2/`);
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.match(await res.text(), /TOOMANYREQUESTS/);
  });

  test('range requests pass through; count per range', async () => {
    proxy.reset();
    const ranges = ['bytes=0-99', 'bytes=1000-1999', 'bytes=0-99'];
    for (const range of ranges) {
      const res = await fetch(proxy.url + blobPath, { headers: { range } });
      assert.equal(res.status, 206);
      const [, a, b] = /=(\d+)-(\d+)/.exec(range)!.map(Number);
      assert.deepEqual(await bytesOf(res), blob.subarray(a!, b! + 1));
    }
    const count = (range: string) => proxy.requests.filter((r) => r.path === blobPath && r.range === range).length;
    assert.equal(count('bytes=0-99'), 2);
    assert.equal(count('bytes=1000-1999'), 1);
  });

  test('multi-range through the proxy: Distribution answers multipart/byteranges', async () => {
    const res = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-9,100000-100099' } });
    assert.equal(res.status, 206);
    assert.match(res.headers.get('content-type') ?? '', /^multipart\/byteranges; boundary=/);
    const body = await bytesOf(res);
    assert.ok(body.indexOf(blob.subarray(0, 10)) >= 0);
    assert.ok(body.indexOf(blob.subarray(100000, 100100)) >= 0);
    assert.match(body.toString('latin1'), /Content-Range: bytes 100000-100099\/262144/);
  });

  test('unsatisfiable range: Distribution\'s broken 416 is passed on, not hung on', async () => {
    // Distribution 2.8 sends Content-Length = blob size with a short text body on 416, then closes.
    const res = await fetch(proxy.url + blobPath, { headers: { range: `bytes=${blob.length}-${blob.length + 10}` } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), `bytes */${blob.length}`);
    await assert.rejects(res.arrayBuffer());
  });

  test('no-multirange → 400; single ranges unaffected', async () => {
    proxy.addFault({ kind: 'no-multirange', times: Infinity });
    try {
      const multi = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-9,20-29' } });
      assert.equal(multi.status, 400);
      await multi.arrayBuffer();
      const single = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-9' } });
      assert.equal(single.status, 206);
      await single.arrayBuffer();
    } finally {
      proxy.clearFaults();
    }
  });

  test('partial-multirange → 206 for the first range only', async () => {
    proxy.addFault({ kind: 'partial-multirange' });
    const res = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=10-19,30-39' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 10-19/${blob.length}`);
    assert.deepEqual(await bytesOf(res), blob.subarray(10, 20));
  });

  test('ignore-range → 200 with the whole blob', async () => {
    proxy.addFault({ kind: 'ignore-range' });
    const res = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-9' } });
    assert.equal(res.status, 200);
    assert.equal((await bytesOf(res)).length, blob.length);
  });

  test('reset-mid-body truncates the body', async () => {
    proxy.reset();
    proxy.addFault({ kind: 'reset-mid-body', afterBytes: 5000, path: blobPath });
    const res = await fetch(proxy.url + blobPath);
    assert.equal(res.status, 200);
    await assert.rejects(res.arrayBuffer());
    assert.equal(proxy.requests[0]?.bytes, 5000);
    assert.equal(proxy.requests[0]?.complete, false);
    const again = await fetch(proxy.url + blobPath);
    assert.deepEqual(await bytesOf(again), blob);
  });

  test('delay and slow-body', async () => {
    proxy.addFault({ kind: 'delay', ms: 200, path: '/v2/' });
    let t0 = Date.now();
    assert.equal((await fetch(`${proxy.url}/v2/`)).status, 200);
    assert.ok(Date.now() - t0 >= 190);
    proxy.addFault({ kind: 'slow-body', bytesPerSecond: 20_000, path: blobPath });
    t0 = Date.now();
    const res = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-3999' } });
    assert.deepEqual(await bytesOf(res), blob.subarray(0, 4000));
    assert.ok(Date.now() - t0 >= 150, `4000 bytes at 20 kB/s took only ${Date.now() - t0} ms`);
  });

  test('redirect to the other host serves the right bytes for a Range, without Authorization', async () => {
    proxy.reset();
    proxy.addFault({ kind: 'redirect', status: 307, to: 'other-host', path: blobPath });
    const res = await fetch(proxy.url + blobPath, { redirect: 'manual' });
    assert.equal(res.status, 307);
    const location = res.headers.get('location') ?? '';
    assert.ok(location.startsWith(`${proxy.otherUrl}/_blob${blobPath}?sig=`), location);

    const part = await fetch(location, { headers: { range: 'bytes=500-1499' } });
    assert.equal(part.status, 206);
    assert.deepEqual(await bytesOf(part), blob.subarray(500, 1500));

    const leaked = await fetch(location, { headers: { authorization: 'Bearer leaked' } });
    assert.equal(leaked.status, 403);
    await leaked.arrayBuffer();

    const signed = proxy.requests.filter((r) => r.signed);
    assert.deepEqual(
      signed.map((r) => [r.listener, r.path, r.range ?? null, r.status, r.authorization]),
      [
        ['other', blobPath, 'bytes=500-1499', 206, false],
        ['other', blobPath, null, 403, true],
      ],
    );
  });

  test('same-host redirect is followed by fetch', async () => {
    proxy.reset();
    proxy.addFault({ kind: 'redirect', status: 302, to: 'same', path: blobPath });
    const res = await fetch(proxy.url + blobPath, { headers: { range: 'bytes=0-15' } });
    assert.equal(res.status, 206);
    assert.deepEqual(await bytesOf(res), blob.subarray(0, 16));
    assert.deepEqual(proxy.requests.map((r) => [r.listener, r.signed, r.status]), [
      ['main', false, 302],
      ['main', true, 206],
    ]);
  });

  test('expire-redirect: a signed URL answers 403 after its first use', async () => {
    proxy.addFault({ kind: 'redirect', path: blobPath, times: 2 });
    const expire = proxy.addFault({ kind: 'expire-redirect' });
    const loc1 = (await fetch(proxy.url + blobPath, { redirect: 'manual' })).headers.get('location')!;
    assert.equal((await fetch(loc1, { headers: { range: 'bytes=0-0' } })).status, 206);
    const stale = await fetch(loc1, { headers: { range: 'bytes=0-0' } });
    assert.equal(stale.status, 403);
    await stale.arrayBuffer();
    assert.equal(expire.hits, 1);
    // Re-resolving through the registry yields a fresh, working URL.
    const loc2 = (await fetch(proxy.url + blobPath, { redirect: 'manual' })).headers.get('location')!;
    assert.notEqual(loc2, loc1);
    const fresh = await fetch(loc2, { headers: { range: 'bytes=1-2' } });
    assert.equal(fresh.status, 206);
    assert.deepEqual(await bytesOf(fresh), blob.subarray(1, 3));
  });

  test('chunked upload (POST, PATCH, PUT) through the proxy', async () => {
    const data = randomBytes(70_000);
    const started = await fetch(`${proxy.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    assert.equal(started.status, 202);
    let location = started.headers.get('location') ?? '';
    assert.ok(location.startsWith(proxy.url), `Location not rewritten to the proxy: ${location}`);
    for (const [from, to] of [[0, 40_000], [40_000, data.length]] as const) {
      const patched = await fetch(location, {
        method: 'PATCH',
        body: data.subarray(from, to),
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${from}-${to - 1}` },
      });
      assert.equal(patched.status, 202, await patched.text());
      assert.equal(patched.headers.get('range'), `0-${to - 1}`);
      location = patched.headers.get('location') ?? '';
      assert.ok(location.startsWith(proxy.url), location);
    }
    const done = new URL(location);
    done.searchParams.set('digest', sha256Digest(data));
    const put = await fetch(done, { method: 'PUT' });
    assert.equal(put.status, 201, await put.text());
    const back = await fetch(`${proxy.url}/v2/${REPO}/blobs/${sha256Digest(data)}`);
    assert.deepEqual(await bytesOf(back), data);
  });

  test('64 concurrent range readers: one logged request each', async () => {
    proxy.reset();
    const chunk = 4096;
    await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const res = await fetch(proxy.url + blobPath, { headers: { range: `bytes=${i * chunk}-${(i + 1) * chunk - 1}` } });
        assert.deepEqual(await bytesOf(res), blob.subarray(i * chunk, (i + 1) * chunk));
      }),
    );
    assert.equal(proxy.requests.length, 64);
    assert.equal(new Set(proxy.requests.map((r) => r.range)).size, 64);
    assert.ok(proxy.requests.every((r) => r.status === 206 && r.bytes === chunk && r.complete));
  });

  test('HEAD passes through with Content-Length and no body', async () => {
    proxy.reset();
    const res = await fetch(proxy.url + blobPath, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(blob.length));
    assert.equal(res.headers.get('docker-content-digest'), digest);
    assert.equal(proxy.requests[0]?.bytes, 0);
  });
});
