import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AuthFile, CredentialChain, RuntimeCredentials, type CredentialSource } from '../../src/registry/auth/credentials.js';
import { RemoteBlob, downloadBlob } from '../../src/registry/blob.js';
import { RegistryClient, type RepoRef } from '../../src/registry/client.js';
import { isRegistryError, type RegistryError } from '../../src/registry/errors.js';
import type { ResolverConfig } from '../../src/registry/hosts.js';
import { ImageResolver, fetchManifest, resolveImage } from '../../src/registry/manifest.js';
import { pushBlob, pushManifest } from '../../src/registry/push.js';
import { parseReference } from '../../src/registry/reference.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { pushTestImage, pushTestIndex } from '../../testkit/images.js';
import { randomBytes } from '../../testkit/layer-tar.js';
import { DEFAULT_USERS, pushBlob as seedBlob, registryFetch, sha256Digest, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog } from '../../testkit/telemetry.js';

const FAST_RETRY = { maxRetries: 3, minWaitMs: 5, maxWaitMs: 2000 };
const USER = 'testuser';
const PASSWORD = DEFAULT_USERS[USER]!;
const NO_CREDS: CredentialSource = { name: 'none', lookup: async () => undefined };
const BLOB = randomBytes(300_000, 42);

function client(opts: { resolver?: ResolverConfig; credentials?: CredentialSource } = {}): RegistryClient {
  return new RegistryClient({ log: testLog(), retry: FAST_RETRY, credentials: opts.credentials ?? NO_CREDS, ...(opts.resolver && { resolver: opts.resolver }) });
}

const staticCreds = (username: string, password: string): CredentialSource => ({ name: 'static', lookup: async () => ({ username, password }) });

/** GET requests the proxy saw for a blob path, on either listener. */
function blobGets(proxy: FaultProxy, digest: string, listener?: 'main' | 'other') {
  return proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`) && (!listener || r.listener === listener));
}

const errors: RegistryError[] = [];
async function rejectsWith(p: Promise<unknown>, code: RegistryError['code'], pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err) => {
    assert.ok(isRegistryError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, pattern);
    errors.push(err);
    return true;
  });
}

describe('registry client against Distribution', () => {
  let plain: Registry;
  let blobDigest: string;
  const repo = (registry: string, repository = 'test/blob'): RepoRef => ({ registry, repository });

  before(async () => {
    plain = await startRegistry();
    blobDigest = await seedBlob(plain.url, 'test/blob', BLOB);
  });
  after(async () => { await plain.stop(); });

  test('push: upload (PUT and PATCH chunks), exists, cross-repository mount, manifest', async () => {
    const c = client();
    const data = randomBytes(200_000, 7);
    const digest = sha256Digest(data);
    assert.deepEqual(await pushBlob(c, repo(plain.host, 'push/a'), digest, { bytes: data }, { chunkSize: 64 << 10 }), { how: 'uploaded' });
    assert.deepEqual(await pushBlob(c, repo(plain.host, 'push/a'), digest, { bytes: data }), { how: 'exists' });
    assert.deepEqual(await pushBlob(c, repo(plain.host, 'push/b'), digest, { bytes: data }, { mountFrom: 'push/a' }), { how: 'mounted' });
    const dir = await mkdtemp(join(tmpdir(), 'estargz-push-'));
    try {
      const file = join(dir, 'blob');
      const other = randomBytes(100_000, 8);
      await writeFile(file, other);
      await pushBlob(c, repo(plain.host, 'push/c'), sha256Digest(other), { path: file, size: other.length });
      const res = await registryFetch(`${plain.url}/v2/push/c/blobs/${sha256Digest(other)}`);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), other);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const res = await registryFetch(`${plain.url}/v2/push/b/blobs/${digest}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), data);
    await rejectsWith(pushBlob(c, repo(plain.host, 'push/d'), sha256Digest(Buffer.from('x')), { bytes: Buffer.from('y') }), 'HTTP_STATUS', /PUT blob sha256:\w+ to .*push\/d: 400 \(DIGEST_INVALID/);
    await c.close();
  });

  test('manifests: Docker v2 and OCI images, an index with two platforms, configs checked', async () => {
    const c = client();
    const amd = await pushTestImage(plain.host, 'img/multi', 'amd64', { layers: [[{ name: 'a', type: 'file', content: Buffer.from('amd64') }]] });
    const arm = await pushTestImage(plain.host, 'img/multi', 'arm64', { oci: true, architecture: 'arm64', layers: [[{ name: 'a', type: 'file', content: Buffer.from('arm64') }]] });
    await pushTestIndex(plain.host, 'img/multi', 'both', [
      { digest: amd.manifestDigest, size: amd.manifestSize, architecture: 'amd64' },
      { digest: arm.manifestDigest, size: arm.manifestSize, architecture: 'arm64' },
    ]);
    const ref = parseReference(`${plain.host}/img/multi:both`);
    const forAmd = await resolveImage(c, ref, { os: 'linux', architecture: 'amd64' });
    assert.equal(forAmd.manifestDigest, amd.manifestDigest);
    assert.deepEqual(forAmd.config.rootfs.diff_ids, [amd.layers[0]!.diffID]);
    assert.ok(forAmd.index);
    const forArm = await resolveImage(c, ref, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.equal(forArm.manifestDigest, arm.manifestDigest);
    assert.equal(forArm.manifest.layers[0]!.digest, arm.layers[0]!.digest);
    await rejectsWith(resolveImage(c, ref, { os: 'linux', architecture: 's390x' }), 'NOT_FOUND', /no manifest for linux\/s390x \(it has: linux\/amd64, linux\/arm64\)/);
    const byDigest = await resolveImage(c, parseReference(`${plain.host}/img/multi@${arm.manifestDigest}`));
    assert.equal(byDigest.manifestDigest, arm.manifestDigest);
    await rejectsWith(resolveImage(c, parseReference(`${plain.host}/img/multi:nope`)), 'NOT_FOUND', /GET manifest .*img\/multi:nope: 404 \(MANIFEST_UNKNOWN/);
    await c.close();
  });

  test('content fetched by digest is checked against the digest', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const img = await pushTestImage(plain.host, 'img/check', 'v1', { layers: [[{ name: 'f', type: 'file', content: Buffer.from('x') }]] });
      proxy.addFault({ path: `/manifests/${img.manifestDigest}`, kind: 'status', status: 200, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: '{"schemaVersion":2,"config":{},"layers":[]}' });
      await rejectsWith(fetchManifest(c, repo(proxy.host, 'img/check'), img.manifestDigest), 'DIGEST_MISMATCH', /content hashes to sha256:\w+, expected sha256:/);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('ranged reads: size by HEAD, single and multi-range in one request, exact bytes', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest, { expectedSize: BLOB.length });
      assert.equal(blob.size, BLOB.length);
      assert.deepEqual(await blob.read(1000, 5000), BLOB.subarray(1000, 6000));
      proxy.reset();
      const ranges = [{ offset: 0, length: 10 }, { offset: 150_000, length: 4096 }, { offset: BLOB.length - 7, length: 7 }];
      const got = await blob.readRanges(ranges);
      assert.deepEqual(got, ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      const gets = blobGets(proxy, blobDigest);
      assert.equal(gets.length, 1);
      assert.equal(gets[0]!.range, 'bytes=0-9,150000-154095,299993-299999');
      await assert.rejects(blob.read(BLOB.length - 1, 2), /outside blob/);
      // A descriptor size is trusted (no request), and a wrong one shows at the first read.
      const wrongSize = await RemoteBlob.open(c, repo(proxy.host), blobDigest, { expectedSize: 5 });
      await rejectsWith(wrongSize.read(0, 5), 'PROTOCOL', /the registry says the blob is 300000 bytes, not 5/);
      await rejectsWith(RemoteBlob.open(c, repo(proxy.host), sha256Digest(Buffer.from('absent'))), 'NOT_FOUND', /HEAD blob .* 404/);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('size falls back to a one-byte GET when HEAD is refused; resolved manifests are cached', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      proxy.addFault({ method: 'HEAD', path: `/blobs/${blobDigest}`, kind: 'status', status: 405 });
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
      assert.equal(blob.size, BLOB.length);
      assert.deepEqual(blobGets(proxy, blobDigest).map((g) => g.range), ['bytes=0-0']);
      await pushTestImage(plain.host, 'img/cached', 'v1', { layers: [[{ name: 'f', type: 'file', content: Buffer.from('x') }]] });
      const images = new ImageResolver(c, 60_000);
      const ref = parseReference(`${proxy.host}/img/cached:v1`);
      proxy.reset();
      const first = await images.resolve(ref);
      const again = await images.resolve(ref);
      assert.equal(again.manifestDigest, first.manifestDigest);
      assert.equal(proxy.requests.filter((r) => r.path.includes('/manifests/')).length, 1, 'one manifest GET for two resolutions');
      images.forget(ref);
      await images.resolve(ref);
      assert.equal(proxy.requests.filter((r) => r.path.includes('/manifests/')).length, 2);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('identical ranges in flight are fetched once', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
      proxy.reset();
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'delay', ms: 100 });
      const reads = await Promise.all(Array.from({ length: 16 }, () => blob.read(4096, 8192)));
      for (const r of reads) assert.deepEqual(r, BLOB.subarray(4096, 12288));
      assert.equal(blobGets(proxy, blobDigest).length, 1);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  describe('faults between the client and the registry', () => {
    let proxy: FaultProxy;
    let c: RegistryClient;
    let blob: RemoteBlob;
    before(async () => {
      proxy = await startFaultProxy(plain.url);
      c = client({ resolver: { host: { [`127.0.0.1:${new URL(proxy.url).port}`]: { mirrors: [{ host: proxy.host, insecure: true, request_timeout_sec: 1 }] } } } });
      blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
    });
    after(async () => {
      await c.close();
      await proxy.stop();
    });
    const expect = (offset: number, length: number) => BLOB.subarray(offset, offset + length);

    test('5xx are retried', async () => {
      proxy.reset();
      const f1 = proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'status', status: 503 });
      const f2 = proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'status', status: 500, times: 2 });
      assert.deepEqual(await blob.read(0, 100), expect(0, 100));
      assert.equal(f1.hits + f2.hits, 3);
      assert.equal(blobGets(proxy, blobDigest).length, 4);
    });

    test('429 honours Retry-After', async () => {
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'status', status: 429, headers: { 'retry-after': '1' } });
      const started = Date.now();
      assert.deepEqual(await blob.read(100, 100), expect(100, 100));
      assert.ok(Date.now() - started >= 900, `waited ${Date.now() - started} ms`);
    });

    test('a connection reset mid-body is retried and the bytes are right', async () => {
      const f = proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'reset-mid-body', afterBytes: 1000 });
      assert.deepEqual(await blob.read(0, 200_000), expect(0, 200_000));
      assert.equal(f.hits, 1);
    });

    test('a wrong Content-Range is a fault of that answer: asked again, then a clear error', async () => {
      const f = proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'wrong-content-range', by: 3, times: 2 });
      assert.deepEqual(await blob.read(1000, 50_000), expect(1000, 50_000));
      assert.equal(f.hits, 2);
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'wrong-content-range', by: 3, times: Infinity });
      await rejectsWith(blob.read(1000, 50_000), 'PROTOCOL', /did not return bytes \[1000, 51000\) in 4 attempts/);
      proxy.clearFaults();
    });

    test('a response slower than the request timeout fails clearly after the retries', async () => {
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'delay', ms: 1500, times: 4 });
      await rejectsWith(blob.read(0, 10), 'TIMEOUT', new RegExp(`GET http://${proxy.host}/v2/test/blob/blobs/${blobDigest}: UND_ERR_HEADERS_TIMEOUT`));
      proxy.clearFaults();
    });

    test('5xx that never ends is an error naming the host and path', async () => {
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'status', status: 502, times: Infinity });
      await rejectsWith(blob.read(0, 10), 'HTTP_STATUS', new RegExp(`GET blob ${blobDigest} of ${proxy.host}/test/blob .*: 502`));
      proxy.clearFaults();
    });

    test('a registry that ignores Range: the full body is cut to the asked range', async () => {
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'ignore-range', times: 2 });
      assert.deepEqual(await blob.read(123_456, 789), expect(123_456, 789));
      assert.deepEqual(await blob.readRanges([{ offset: 5, length: 5 }, { offset: 290_000, length: 10_000 }]), [expect(5, 5), expect(290_000, 10_000)]);
    });
  });

  test('a registry that refuses multi-range (400) gets single ranges, from then on', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
      proxy.addFault({ kind: 'no-multirange', times: Infinity });
      const ranges = [{ offset: 0, length: 10 }, { offset: 100_000, length: 10 }, { offset: 200_000, length: 10 }];
      assert.deepEqual(await blob.readRanges(ranges), ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      proxy.reset();
      assert.deepEqual(await blob.readRanges([{ offset: 1, length: 1 }, { offset: 250_000, length: 2 }]), [BLOB.subarray(1, 2), BLOB.subarray(250_000, 250_002)]);
      assert.ok(blobGets(proxy, blobDigest).every((r) => !r.range?.includes(',')), 'no multi-range request after the 400');
      // Nearby ranges become one range in single-range mode.
      proxy.reset();
      await blob.readRanges([{ offset: 1000, length: 10 }, { offset: 2000, length: 10 }]);
      assert.deepEqual(blobGets(proxy, blobDigest).map((r) => r.range), ['bytes=1000-2009']);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('a registry that answers a multi-range request with the whole blob gets single ranges from then on', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
      const f = proxy.addFault({ kind: 'ignore-range', times: Infinity, path: (r) => (r.headers.range ?? '').includes(',') });
      const ranges = [{ offset: 10, length: 10 }, { offset: 290_000, length: 10 }];
      assert.deepEqual(await blob.readRanges(ranges), ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      proxy.reset();
      assert.deepEqual(await blob.readRanges(ranges), ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      assert.equal(f.hits, 1, 'the whole blob was sent once');
      assert.ok(blobGets(proxy, blobDigest).every((g) => !g.range?.includes(',') && g.bytes < 1000));
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('a registry that answers only the first range of a multi-range request', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    try {
      const blob = await RemoteBlob.open(c, repo(proxy.host), blobDigest);
      const f = proxy.addFault({ kind: 'partial-multirange' });
      const ranges = [{ offset: 10, length: 10 }, { offset: 150_000, length: 10 }, { offset: 299_000, length: 1000 }];
      assert.deepEqual(await blob.readRanges(ranges), ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      assert.equal(f.hits, 1);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('a mirror that fails or lacks the blob falls through to the origin; mirrors get ns=', async () => {
    const mirror = await startFaultProxy(plain.url);
    try {
      mirror.addFault({ kind: 'status', status: 503, times: Infinity, path: '/blobs/' });
      const c = client({ resolver: { host: { [plain.host]: { mirrors: [{ host: mirror.host, insecure: true }] } } } });
      const blob = await RemoteBlob.open(c, repo(plain.host), blobDigest);
      assert.deepEqual(await blob.read(7, 7), BLOB.subarray(7, 14));
      assert.ok(mirror.requests.length > 0 && mirror.requests.every((r) => r.url.includes(`ns=${encodeURIComponent(plain.host)}`)));
      await c.close();
    } finally {
      await mirror.stop();
    }
  });

  test('downloadBlob resumes a broken transfer with a Range and checks the digest', async () => {
    const proxy = await startFaultProxy(plain.url);
    const c = client();
    const dir = await mkdtemp(join(tmpdir(), 'estargz-dl-'));
    try {
      proxy.addFault({ path: `/blobs/${blobDigest}`, method: 'GET', kind: 'reset-mid-body', afterBytes: 100_000, times: 2 });
      const file = join(dir, 'b');
      assert.equal(await downloadBlob(c, repo(proxy.host), blobDigest, file), BLOB.length);
      assert.deepEqual(await readFile(file), BLOB);
      const gets = blobGets(proxy, blobDigest);
      assert.ok(gets.some((g) => g.range && /^bytes=\d+-$/.test(g.range)), 'resumed with an open-ended Range');
    } finally {
      await c.close();
      await proxy.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('authentication', () => {
  let basic: Registry;
  let token: Registry;
  let basicDigest: string;
  let tokenDigest: string;
  let dir: string;
  const creds = { username: USER, password: PASSWORD };

  before(async () => {
    [basic, token] = await Promise.all([startRegistry({ auth: 'htpasswd' }), startRegistry({ auth: 'token' })]);
    basicDigest = await seedBlob(basic.url, 'private/blob', BLOB, creds);
    tokenDigest = await seedBlob(token.url, 'private/blob', BLOB, creds);
    dir = await mkdtemp(join(tmpdir(), 'estargz-auth-'));
  });
  after(async () => {
    await Promise.all([basic.stop(), token.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  test('Basic (htpasswd): credentials from an auth file; none or wrong ones are refused without showing them', async () => {
    const authFile = join(dir, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [basic.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } }));
    const c = client({ credentials: new CredentialChain([new AuthFile(authFile)]) });
    const blob = await RemoteBlob.open(c, { registry: basic.host, repository: 'private/blob' }, basicDigest);
    assert.deepEqual(await blob.read(0, 1000), BLOB.subarray(0, 1000));
    await c.close();

    const anon = client();
    await rejectsWith(RemoteBlob.open(anon, { registry: basic.host, repository: 'private/blob' }, basicDigest), 'UNAUTHORIZED', new RegExp(`${basic.host} requires a username and password for private/blob`));
    await anon.close();
    const wrong = client({ credentials: staticCreds(USER, 'not-the-password-9f8e7d') });
    await rejectsWith(RemoteBlob.open(wrong, { registry: basic.host, repository: 'private/blob' }, basicDigest), 'UNAUTHORIZED', /refused HEAD private\/blob\/blobs\/sha256:\w+ \(401 Unauthorized, credentials were sent\)/);
    await wrong.close();
  });

  test('credentials handed in at run time come first', async () => {
    const runtime = new RuntimeCredentials();
    const c = client({ credentials: new CredentialChain([runtime]) });
    runtime.set(basic.host, 'private/blob', creds);
    const blob = await RemoteBlob.open(c, { registry: basic.host, repository: 'private/blob' }, basicDigest);
    assert.deepEqual(await blob.read(5, 5), BLOB.subarray(5, 10));
    await c.close();
  });

  test('Bearer token flow: token fetched once per scope and reused; push gets a pull,push token', async () => {
    const server = token.token!;
    const before = server.requests.length;
    const c = client({ credentials: staticCreds(USER, PASSWORD) });
    const repoRef = { registry: token.host, repository: 'private/blob' };
    const blob = await RemoteBlob.open(c, repoRef, tokenDigest);
    for (let i = 0; i < 5; i++) assert.deepEqual(await blob.read(i * 1000, 1000), BLOB.subarray(i * 1000, (i + 1) * 1000));
    const pulls = server.requests.slice(before);
    assert.deepEqual(pulls.map((r) => [r.scope, r.account, r.authorized]), [['repository:private/blob:pull', USER, true]]);
    const data = Buffer.from('pushed with a token');
    await pushBlob(c, { registry: token.host, repository: 'private/pushed' }, sha256Digest(data), { bytes: data });
    await pushManifest(c, { registry: token.host, repository: 'private/pushed' }, 'v1', Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(data), size: data.length }, layers: [],
    })), 'application/vnd.oci.image.manifest.v1+json');
    assert.ok(server.requests.slice(before).some((r) => r.scope === 'repository:private/pushed:pull,push' && r.authorized));
    await c.close();
  });

  test('a 401 on a cached token refreshes the token once', async () => {
    const proxy = await startFaultProxy(token.url);
    const server = token.token!;
    const c = client({ credentials: staticCreds(USER, PASSWORD) });
    try {
      const blob = await RemoteBlob.open(c, { registry: proxy.host, repository: 'private/blob' }, tokenDigest);
      const before = server.requests.length;
      const challenge = `Bearer realm="${server.realm}",service="${server.service}",scope="repository:private/blob:pull",error="invalid_token"`;
      proxy.addFault({ path: `/blobs/${tokenDigest}`, method: 'GET', kind: 'status', status: 401, headers: { 'www-authenticate': challenge } });
      assert.deepEqual(await blob.read(0, 10), BLOB.subarray(0, 10));
      assert.equal(server.requests.length - before, 1, 'one new token');
      proxy.addFault({ path: `/blobs/${tokenDigest}`, method: 'GET', kind: 'status', status: 401, headers: { 'www-authenticate': challenge }, times: 2 });
      await rejectsWith(blob.read(10, 10), 'UNAUTHORIZED', /refused GET private\/blob\/blobs\/sha256:\w+ \(401 Unauthorized, credentials were sent\)/);
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('anonymous or wrong credentials against a token registry are refused clearly', async () => {
    const anon = client();
    await rejectsWith(RemoteBlob.open(anon, { registry: token.host, repository: 'private/blob' }, tokenDigest), 'UNAUTHORIZED', /refused HEAD private\/blob/);
    await anon.close();
    const wrong = client({ credentials: staticCreds(USER, 'wrong-secret-1a2b3c') });
    await rejectsWith(RemoteBlob.open(wrong, { registry: token.host, repository: 'private/blob' }, tokenDigest), 'UNAUTHORIZED', /token server .* refused a token for repository:private\/blob:pull with the configured credentials \(401\)/);
    await wrong.close();
  });

  test('an identity token (Docker config "identitytoken") is exchanged with the refresh_token grant', async () => {
    const server = token.token!;
    const form = new URLSearchParams({ grant_type: 'password', username: USER, password: PASSWORD, service: server.service, scope: 'repository:private/blob:pull', access_type: 'offline', client_id: 'test' });
    const res = await fetch(server.realm, { method: 'POST', body: form });
    const { refresh_token: refresh } = (await res.json()) as { refresh_token: string };
    assert.ok(refresh);
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ auths: { [token.host]: { identitytoken: refresh } } }));
    const c = client({ credentials: new AuthFile(config) });
    const blob = await RemoteBlob.open(c, { registry: token.host, repository: 'private/blob' }, tokenDigest);
    assert.deepEqual(await blob.read(0, 3), BLOB.subarray(0, 3));
    assert.ok(server.requests.some((r) => r.method === 'POST' && r.authorized && r.scope === 'repository:private/blob:pull'));
    await c.close();
  });

  test('redirects to object storage: Range kept, Authorization dropped, target reused, re-resolved when it expires', async () => {
    const proxy = await startFaultProxy(token.url);
    const c = client({ credentials: staticCreds(USER, PASSWORD) });
    try {
      const blob = await RemoteBlob.open(c, { registry: proxy.host, repository: 'private/blob' }, tokenDigest);
      await blob.read(0, 1); // get a token first: the proxy redirects only authorized requests
      proxy.reset();
      proxy.addFault({ path: `/blobs/${tokenDigest}`, method: 'GET', kind: 'redirect', status: 307, to: 'other-host' });
      assert.deepEqual(await blob.read(1000, 2000), BLOB.subarray(1000, 3000));
      assert.deepEqual(await blob.read(50_000, 10), BLOB.subarray(50_000, 50_010));
      const other = blobGets(proxy, tokenDigest, 'other');
      assert.equal(other.length, 2, 'both reads went to the redirect target');
      assert.ok(other.every((r) => !r.authorization && r.status === 206));
      assert.equal(blobGets(proxy, tokenDigest, 'main').length, 1, 'the registry was asked once');
      proxy.addFault({ kind: 'expire-redirect', times: 1 });
      proxy.addFault({ path: `/blobs/${tokenDigest}`, method: 'GET', kind: 'redirect', status: 307, to: 'other-host' });
      assert.deepEqual(await blob.read(7, 7), BLOB.subarray(7, 14));
      assert.equal(blobGets(proxy, tokenDigest, 'main').length, 2, 'the expired target was re-resolved at the registry');
    } finally {
      await c.close();
      await proxy.stop();
    }
  });

  test('no password or token appears in any error message', () => {
    assert.ok(errors.length >= 10);
    for (const err of errors) {
      for (const secret of [PASSWORD, 'not-the-password-9f8e7d', 'wrong-secret-1a2b3c', 'Bearer ey', 'Basic dGVzd']) {
        assert.ok(!err.message.includes(secret), `${err.message} contains a secret`);
        assert.ok(!String(err.stack).includes(secret));
      }
    }
  });
});
