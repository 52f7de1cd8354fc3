import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseChallenge } from '../../src/registry/auth/challenge.js';
import { AuthFile, CredentialChain, RuntimeCredentials, defaultAuthFiles } from '../../src/registry/auth/credentials.js';
import { parseMultipart, rangeHeader } from '../../src/registry/blob.js';
import { isRegistryError } from '../../src/registry/errors.js';
import { endpointUrl, endpointsFor, isLocalHost } from '../../src/registry/hosts.js';
import { platformMatches } from '../../src/registry/media-types.js';
import { formatReference, parseReference } from '../../src/registry/reference.js';

describe('image references', () => {
  const cases: [string, string][] = [
    ['python', 'docker.io/library/python'],
    ['python:3.11', 'docker.io/library/python:3.11'],
    ['docker.io/python:3.11', 'docker.io/library/python:3.11'],
    ['index.docker.io/library/python', 'docker.io/library/python'],
    ['user/app:v1', 'docker.io/user/app:v1'],
    ['ghcr.io/o/r/deep/name:tag', 'ghcr.io/o/r/deep/name:tag'],
    ['localhost/app', 'localhost/app'],
    ['127.0.0.1:5000/test/python:esgz', '127.0.0.1:5000/test/python:esgz'],
    ['[::1]:5000/a/b', '[::1]:5000/a/b'],
    [`reg.example.com:443/app@sha256:${'a'.repeat(64)}`, `reg.example.com:443/app@sha256:${'a'.repeat(64)}`],
    [`app:1.0@sha256:${'b'.repeat(64)}`, `docker.io/library/app:1.0@sha256:${'b'.repeat(64)}`],
  ];
  for (const [input, canonical] of cases) {
    test(`${input} → ${canonical}`, () => assert.equal(formatReference(parseReference(input)), canonical));
  }

  test('bad references are refused, naming the part', () => {
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['UPPER/case', /lowercase/],
      ['app:bad tag', /tag/],
      ['app@sha256:1234', /64 lowercase hex/],
      ['app@nodigest', /digest/],
      ['reg.example.com/', /repository path/],
      ['a//b', /repository path/],
    ];
    for (const [input, why] of bad) {
      assert.throws(() => parseReference(input), (err) => isRegistryError(err, 'BAD_REFERENCE') && why.test(err.message), input);
    }
  });
});

describe('hosts and mirrors', () => {
  test('plain HTTP only for loopback and insecure hosts; Docker Hub maps to registry-1', () => {
    assert.equal(isLocalHost('127.0.0.1:5000'), true);
    assert.equal(isLocalHost('127.5.6.7'), true);
    assert.equal(isLocalHost('localhost:80'), true);
    assert.equal(isLocalHost('[::1]:5000'), true);
    assert.equal(isLocalHost('128.0.0.1'), false);
    assert.equal(isLocalHost('registry.example.com'), false);
    assert.deepEqual(endpointsFor('docker.io').map((e) => `${e.scheme}://${e.host}`), ['https://registry-1.docker.io']);
    assert.equal(endpointsFor('127.0.0.1:5000')[0]!.scheme, 'http');
  });

  test('mirrors in order, then the origin, with headers, timeouts and ns=', () => {
    const eps = endpointsFor('ghcr.io', {
      request_timeout_sec: 12,
      host: {
        'ghcr.io': {
          mirrors: [
            { host: 'mirror.local:5000', insecure: true, request_timeout_sec: 3, header: { 'x-a': ['1', '2'], 'x-b': 'c' } },
            { host: 'cache.example.com/prefix/', request_timeout_sec: -1 },
          ],
        },
      },
    });
    assert.deepEqual(eps.map((e) => [e.scheme, e.host, e.pathPrefix, e.timeoutMs, e.mirror]), [
      ['http', 'mirror.local:5000', '', 3000, true],
      ['https', 'cache.example.com', '/prefix', 0, true],
      ['https', 'ghcr.io', '', 12000, false],
    ]);
    assert.deepEqual(eps[0]!.headers, { 'x-a': '1, 2', 'x-b': 'c' });
    assert.equal(endpointUrl(eps[1]!, 'o/r/blobs/sha256:x'), 'https://cache.example.com/prefix/v2/o/r/blobs/sha256:x?ns=ghcr.io');
    assert.equal(endpointUrl(eps[2]!, 'o/r/manifests/v1'), 'https://ghcr.io/v2/o/r/manifests/v1');
  });

  test('the origin listed as an insecure mirror of itself is used over HTTP (stargz-store issue #428 style config)', () => {
    const eps = endpointsFor('reg:5000', { host: { 'reg:5000': { mirrors: [{ host: 'reg:5000', insecure: true }] } } });
    assert.deepEqual(eps.map((e) => [e.scheme, e.host, e.mirror]), [['http', 'reg:5000', false]]);
  });

  test('bad header config is refused naming the key', () => {
    assert.throws(() => endpointsFor('r.io', { host: { 'r.io': { mirrors: [{ host: 'm', header: { x: 5 as unknown as string } }] } } }),
      (err) => isRegistryError(err, 'BAD_CONFIG') && /resolver.host."r.io".mirrors\[0\]: header "x"/.test(err.message));
  });
});

describe('WWW-Authenticate', () => {
  test('Bearer with quoted params, escapes and commas inside quotes', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), {
      scheme: 'bearer',
      params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' },
    });
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
    assert.deepEqual(parseChallenge('Bearer realm=tok, error="invalid_token", x="a\\"b"'), { scheme: 'bearer', params: { realm: 'tok', error: 'invalid_token', x: 'a"b' } });
    assert.equal(parseChallenge(undefined), undefined);
  });
});

describe('multipart/byteranges', () => {
  test('parts are read by their Content-Range lengths, even when data contains the boundary', () => {
    const b = 'THIS_STRING_SEPARATES';
    const body = Buffer.concat([
      Buffer.from(`--${b}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 10-14/100\r\n\r\n`),
      Buffer.from(`--${b}`.slice(0, 5)),
      Buffer.from(`\r\n--${b}\r\nContent-Range: bytes 50-74/100\r\n\r\n`),
      Buffer.from(`--${b}--`),
      Buffer.from(`\r\n--${b}--\r\n`),
    ]);
    const parts = parseMultipart(body, b);
    assert.deepEqual(parts.map((p) => [p.start, p.data.toString()]), [[10, `--${b}`.slice(0, 5)], [50, `--${b}--`]]);
    assert.equal(rangeHeader([{ offset: 0, length: 10 }, { offset: 20, length: 1 }]), 'bytes=0-9,20-20');
  });
});

describe('platforms', () => {
  test('arm64 v8 variant is optional; other variants must match', () => {
    assert.equal(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }), true);
    assert.equal(platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm', variant: 'v7' }), false);
    assert.equal(platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' }), true);
    assert.equal(platformMatches({ os: 'windows', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' }), false);
  });
});

describe('credential sources', () => {
  test('podman auth.json and Docker config.json: most specific key first, docker.io aliases, identity tokens; runtime first', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'estargz-auth-'));
    try {
      const podman = join(dir, 'auth.json');
      const docker = join(dir, 'config.json');
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      await writeFile(podman, JSON.stringify({ auths: {
        'reg.example.com': { auth: b64('host:hostpw') },
        'reg.example.com/team': { auth: b64('team:teampw') },
      } }));
      await writeFile(docker, JSON.stringify({ auths: {
        'https://index.docker.io/v1/': { auth: b64('hub:hubpw') },
        'ghcr.io': { identitytoken: 'refresh-me', auth: b64('x:y') },
      } }));
      const runtime = new RuntimeCredentials();
      const chain = new CredentialChain([runtime, new AuthFile(podman), new AuthFile(docker), new AuthFile(join(dir, 'missing.json'))]);
      assert.deepEqual(await chain.lookup('reg.example.com', 'team/app'), { username: 'team', password: 'teampw' });
      assert.deepEqual(await chain.lookup('reg.example.com', 'other/app'), { username: 'host', password: 'hostpw' });
      assert.deepEqual(await chain.lookup('docker.io', 'library/python'), { username: 'hub', password: 'hubpw' });
      assert.deepEqual(await chain.lookup('ghcr.io', 'o/r'), { identityToken: 'refresh-me' });
      assert.equal(await chain.lookup('unknown.io', 'a'), undefined);
      runtime.set('reg.example.com', 'team/app', { username: 'rt', password: 'rtpw' });
      assert.deepEqual(await chain.lookup('reg.example.com', 'team/app'), { username: 'rt', password: 'rtpw' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('default auth file order: REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, /run/containers/0, DOCKER_CONFIG, ~/.docker', () => {
    const paths = defaultAuthFiles({ REGISTRY_AUTH_FILE: '/a.json', XDG_RUNTIME_DIR: '/run/user/1', DOCKER_CONFIG: '/dc', HOME: '/h' }).map((f) => f.path);
    assert.deepEqual(paths, ['/a.json', '/run/user/1/containers/auth.json', '/run/containers/0/auth.json', '/dc/config.json', '/h/.docker/config.json']);
  });
});
