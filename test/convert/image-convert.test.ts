import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../../src/estargz/toc.js';
import { busyboxLayer, pushTestImage, pushTestIndex } from '../../testkit/images.js';
import { startPodman } from '../../testkit/podman.js';
import { DEFAULT_USERS, registryFetch, startRegistry, type Registry } from '../../testkit/registry.js';
import type { ImageConvertResult } from '../../src/convert/image-convert.js';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const run = promisify(execFile);

async function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('image convert', () => {
  let reg: Registry;
  let dir: string;
  before(async () => {
    reg = await startRegistry();
    dir = await mkdtemp(join(tmpdir(), 'estargz-imgconv-'));
  });
  after(async () => {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function manifestOf(ref: string): Promise<{ layers: { digest: string; size: number; mediaType: string; annotations: Record<string, string> }[]; config: { digest: string } }> {
    const [repo, tag] = ref.slice(reg.host.length + 1).split(':');
    const res = await registryFetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    return (await res.json()) as never;
  }

  test('converted layers pass `layer verify --toc-digest <annotation>`; diff_ids rewritten; podman pulls and runs it', async () => {
    const src = await pushTestImage(reg.host, 'conv/busybox', 'gzip', {
      layers: [await busyboxLayer(), [
        { name: 'data/', type: 'directory' },
        { name: 'data/big.bin', type: 'file', content: Buffer.alloc(5 << 20, 'z') },
        { name: 'etc/hello', type: 'file', content: Buffer.from('hello from layer 2\n') },
      ]],
    });
    const dst = `${reg.host}/conv/busybox:esgz`;
    const r = await cli(['image', 'convert', src.ref, dst, '--json', '--prioritized-files', 'bin/busybox,etc/hello']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout) as ImageConvertResult;
    assert.equal(result.manifests.length, 1);
    const manifest = await manifestOf(dst);
    const config = (await (await registryFetch(`${reg.url}/v2/conv/busybox/blobs/${manifest.config.digest}`)).json()) as { rootfs: { diff_ids: string[] }; config: unknown };
    assert.deepEqual(config.config, { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] });
    for (const [i, layer] of manifest.layers.entries()) {
      assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
      const toc = layer.annotations[TOC_DIGEST_ANNOTATION]!;
      const blob = Buffer.from(await (await registryFetch(`${reg.url}/v2/conv/busybox/blobs/${layer.digest}`)).arrayBuffer());
      const path = join(dir, `layer${i}.esgz`);
      await writeFile(path, blob);
      const verify = await cli(['layer', 'verify', path, '--toc-digest', toc]);
      assert.equal(verify.code, 0, verify.stderr);
      const plain = gunzipSync(blob);
      assert.equal(layer.annotations[UNCOMPRESSED_SIZE_ANNOTATION], String(plain.length));
      assert.equal(config.rootfs.diff_ids[i], sha(plain));
      assert.equal(result.manifests[0]!.layers[i]!.source, src.layers[i]!.digest);
    }

    const podman = await startPodman();
    try {
      await podman.run(['pull', '-q', '--tls-verify=false', dst]);
      const hello = await podman.run(['run', '--rm', '--network', 'none', dst, 'cat', '/etc/hello']);
      assert.equal(hello.stdout, 'hello from layer 2\n');
      const size = await podman.run(['run', '--rm', '--network', 'none', dst, 'wc', '-c', '/data/big.bin']);
      assert.match(size.stdout, /^\s*5242880 \/data\/big.bin\n$/);
    } finally {
      await podman.cleanup();
    }

    // Converting it again passes the layers through as they are.
    const again = await cli(['image', 'convert', dst, `${reg.host}/conv/again:esgz`, '--json']);
    assert.equal(again.code, 0, again.stderr);
    const againResult = JSON.parse(again.stdout) as ImageConvertResult;
    assert.deepEqual(againResult.manifests[0]!.layers.map((l) => [l.digest, l.converted]), manifest.layers.map((l) => [l.digest, false]));
  });

  test('progress: with stderr not a terminal, one JSON line per layer event, counts matching the result', async () => {
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i); // little redundancy: the blob stays MBs
    const src = await pushTestImage(reg.host, 'conv/progress', 'gzip', {
      layers: [
        [{ name: 'a/', type: 'directory' }, { name: 'a/big.bin', type: 'file', content: big }],
        [{ name: 'b.txt', type: 'file', content: Buffer.from('b\n') }],
      ],
    });
    const r = await cli(['image', 'convert', src.ref, `${reg.host}/conv/progress:esgz`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout) as ImageConvertResult;
    const events = r.stderr.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown> & { event: string; id: string });
    for (const [i, layer] of result.manifests[0]!.layers.entries()) {
      const mine = events.filter((e) => e.id === `linux/amd64/${i + 1}`);
      assert.equal(mine[0]!.event, 'layer-start');
      assert.equal(mine.at(-1)!.event, 'layer-done');
      assert.equal(mine.filter((e) => e.event === 'layer-done').length, 1);
      assert.ok(mine.slice(1, -1).every((e) => e.event === 'layer-progress'), JSON.stringify(mine));
      // Stages move forward, counts never go back.
      const order = ['download', 'convert', 'push', 'done'];
      const stages = mine.map((e) => order.indexOf(e.stage as string));
      assert.deepEqual(stages, [...stages].sort((a, b) => a - b));
      for (const key of ['downloaded', 'read', 'written', 'pushed']) {
        const values = mine.map((e) => e[key]).filter((v): v is number => typeof v === 'number');
        assert.deepEqual(values, [...values].sort((a, b) => a - b), key);
      }
      const done = mine.at(-1)!;
      assert.equal(done.stage, 'done');
      assert.equal(done.size, src.layers[i]!.gz.length);
      assert.equal(done.downloaded, src.layers[i]!.gz.length);
      assert.equal(done.written, layer.size);
      assert.equal(done.pushed, layer.size);
      assert.equal(done.read, layer.uncompressedSize);
      assert.equal(done.tarBytes, layer.uncompressedSize);
    }
    assert.equal(events.length, events.filter((e) => e.id.startsWith('linux/amd64/')).length);

    const quiet = await cli(['image', 'convert', src.ref, `${reg.host}/conv/progress:quiet`, '--progress', 'none']);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
  });

  test('an index: one platform by default or --platform, every platform with --all-platforms', async () => {
    const amd = await pushTestImage(reg.host, 'conv/multi', 'amd64', { layers: [[{ name: 'arch', type: 'file', content: Buffer.from('amd64') }]] });
    const arm = await pushTestImage(reg.host, 'conv/multi', 'arm64', { architecture: 'arm64', layers: [[{ name: 'arch', type: 'file', content: Buffer.from('arm64') }]] });
    await pushTestIndex(reg.host, 'conv/multi', 'all', [
      { digest: amd.manifestDigest, size: amd.manifestSize, architecture: 'amd64' },
      { digest: arm.manifestDigest, size: arm.manifestSize, architecture: 'arm64' },
    ]);
    const one = JSON.parse((await cli(['image', 'convert', `${reg.host}/conv/multi:all`, `${reg.host}/conv/multi:arm`, '--platform', 'linux/arm64', '--json'])).stdout) as ImageConvertResult;
    assert.deepEqual(one.manifests.map((m) => m.platform), ['linux/arm64']);
    assert.equal(one.manifests[0]!.layers[0]!.source, arm.layers[0]!.digest);
    const all = await cli(['image', 'convert', `${reg.host}/conv/multi:all`, `${reg.host}/conv/multi:all-esgz`, '--all-platforms', '--json']);
    assert.equal(all.code, 0, all.stderr);
    const allResult = JSON.parse(all.stdout) as ImageConvertResult;
    assert.equal(allResult.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(allResult.manifests.map((m) => m.platform), ['linux/amd64', 'linux/arm64']);
    const index = (await (await registryFetch(`${reg.url}/v2/conv/multi/manifests/all-esgz`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } })).json()) as { manifests: { digest: string; platform: { architecture: string } }[] };
    assert.deepEqual(index.manifests.map((m) => [m.digest, m.platform.architecture]), allResult.manifests.map((m) => [m.digest, m.platform.split('/')[1]]));
  });

  test('bad references and unreachable registries fail with a clear message', async () => {
    const bad = await cli(['image', 'convert', 'Not A Ref', `${reg.host}/x:y`]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /BAD_REFERENCE: invalid image reference "Not A Ref"/);
    const missing = await cli(['image', 'convert', `${reg.host}/conv/none:tag`, `${reg.host}/x:y`]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND: GET manifest .*conv\/none:tag: 404/);
  });
});

describe('image convert against a registry with auth: no secret in any output', () => {
  test('credentials come from REGISTRY_AUTH_FILE; a wrong password is refused without being printed', async () => {
    const reg = await startRegistry({ auth: 'htpasswd' });
    const dir = await mkdtemp(join(tmpdir(), 'estargz-imgauth-'));
    try {
      const user = 'testuser';
      const password = DEFAULT_USERS[user]!;
      const src = await pushTestImage(reg.host, 'private/app', 'gzip', { layers: [[{ name: 'f', type: 'file', content: Buffer.from('secret data') }]] }, { username: user, password });
      const authFile = join(dir, 'auth.json');
      const env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: dir };
      const wrongPassword = 'Wr0ng-P4ssw0rd-do-not-print';
      await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${user}:${wrongPassword}`).toString('base64') } } }));
      const denied = await cli(['image', 'convert', src.ref, `${reg.host}/private/app:esgz`], env);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /UNAUTHORIZED: /);
      await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
      const ok = await cli(['image', 'convert', src.ref, `${reg.host}/private/app:esgz`, '--json'], env);
      assert.equal(ok.code, 0, ok.stderr);
      for (const out of [denied.stdout, denied.stderr, ok.stdout, ok.stderr]) {
        for (const secret of [password, wrongPassword, Buffer.from(`${user}:${password}`).toString('base64'), Buffer.from(`${user}:${wrongPassword}`).toString('base64')]) {
          assert.ok(!out.includes(secret), `output contains a secret: ${out.slice(0, 200)}`);
        }
      }
    } finally {
      await reg.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
