import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pushTestImage } from '../../testkit/images.js';
import { startPodman, type Podman } from '../../testkit/podman.js';
import { pythonImageLayers } from '../../testkit/python-image.js';
import { registryFetch, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface BlobGet {
  digest: string;
  agent: string;
  bytes: number;
}

/** Blob GETs in Distribution's access log since line `from`: digest, user agent, bytes written. */
async function blobGets(reg: Registry, from: number): Promise<BlobGet[]> {
  const lines = (await reg.logLines()).slice(from);
  const out: BlobGet[] = [];
  for (const line of lines) {
    if (!line.includes('response completed') || !/http\.request\.method=GET/.test(line)) continue;
    const uri = /http\.request\.uri="([^"]+)"/.exec(line)?.[1] ?? '';
    const digest = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(uri)?.[1];
    if (!digest) continue;
    const agent = /http\.request\.useragent="([^"]*)"/.exec(line)?.[1] ?? /http\.request\.useragent=(\S+)/.exec(line)?.[1] ?? '';
    out.push({ digest, agent, bytes: Number(/http\.response\.written=(\d+)/.exec(line)?.[1] ?? 0) });
  }
  return out;
}

describe('podman 4.3.1 with the store as an additional layer store', () => {
  let reg: Registry;
  let store: RunningStore;
  let podman: Podman;
  let work: string;
  const esgz = () => `${reg.host}/e2e/python:esgz`;
  let layers: { digest: string; size: number }[];

  before(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'estargz-podman-'));
    await pushTestImage(reg.host, 'e2e/python', 'gzip', { layers: await pythonImageLayers() });
    const conv = await run(process.execPath, [CLI, 'image', 'convert', `${reg.host}/e2e/python:gzip`, esgz(), '--json'], { maxBuffer: 16 << 20 });
    layers = (JSON.parse(conv.stdout) as { manifests: { layers: { digest: string; size: number }[] }[] }).manifests[0]!.layers;
    store = await startStore('background_fetch_idle_sec = 120\n');
    podman = await startPodman({
      additionalLayerStores: [`${store.mnt}:ref`],
      registriesExtra: `[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n`,
    });
  });
  after(async () => {
    await podman?.cleanup();
    await store?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('pull is lazy: podman fetches no layer blob, the store under 10% of the layer bytes', async () => {
    const mark = (await reg.logLines()).length;
    await podman.run(['pull', '-q', esgz()]);
    const gets = await blobGets(reg, mark);
    const layerDigests = new Set(layers.map((l) => l.digest));
    const podmanLayerGets = gets.filter((g) => layerDigests.has(g.digest) && g.agent.startsWith('containers/'));
    assert.deepEqual(podmanLayerGets, [], 'podman fetched a layer blob itself');
    const storeBytes = gets.filter((g) => g.agent.startsWith('estargz-store')).reduce((n, g) => n + g.bytes, 0);
    const total = layers.reduce((n, l) => n + l.size, 0);
    assert.ok(storeBytes < total * 0.1, `the store fetched ${storeBytes} of ${total} layer bytes`);
    const info = JSON.parse((await podman.run(['image', 'inspect', esgz()])).stdout) as { RootFS: { Layers: string[] } }[];
    assert.equal(info[0]!.RootFS.Layers.length, 2);
  });

  test('podman run: echo hello, and a python one-liner', async () => {
    const hello = await podman.run(['run', '--rm', '--network', 'none', esgz(), 'echo', 'hello']);
    assert.equal(hello.stdout, 'hello\n');
    const py = await podman.run(['run', '--rm', '--network', 'none', esgz(), 'python3', '-c', 'import json,email,http.client,sqlite3,sys; print("python", sys.version_info[0], json.dumps({"ok": True}))']);
    assert.equal(py.stdout, 'python 3 {"ok": true}\n');
  });

  test('podman save writes layers whose digests are the config diff_ids', async () => {
    const out = join(work, 'save.tar');
    await podman.run(['save', '-o', out, esgz()]);
    const dir = join(work, 'save');
    await run('mkdir', ['-p', dir]);
    await run('tar', ['-xf', out, '-C', dir]);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { Config: string; Layers: string[] }[];
    const config = JSON.parse(await readFile(join(dir, manifest[0]!.Config), 'utf8')) as { rootfs: { diff_ids: string[] } };
    const digests = await Promise.all(manifest[0]!.Layers.map(async (l) => 'sha256:' + createHash('sha256').update(await readFile(join(dir, l))).digest('hex')));
    assert.deepEqual(digests, config.rootfs.diff_ids);
  });

  test('podman push to another repository; that image pulls back and runs', async () => {
    const pushed = `${reg.host}/e2e/pushed:v1`;
    await podman.run(['push', '-q', '--tls-verify=false', esgz(), `docker://${pushed}`]);
    const res = await registryFetch(`${reg.url}/v2/e2e/pushed/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } });
    assert.equal(res.status, 200);
    await podman.run(['rmi', '-f', esgz()]);
    await podman.run(['pull', '-q', pushed]);
    const hello = await podman.run(['run', '--rm', '--network', 'none', pushed, 'cat', '/etc/hello']);
    assert.equal(hello.stdout, 'hello from the python test image\n');
  });

  test('a plain gzip image still pulls (normally) and runs with the store mounted', async () => {
    const gzip = `${reg.host}/e2e/python:gzip`;
    const mark = (await reg.logLines()).length;
    await podman.run(['pull', '-q', gzip]);
    const gets = await blobGets(reg, mark);
    assert.ok(gets.some((g) => g.agent.startsWith('containers/')), 'podman pulled the layers itself');
    const py = await podman.run(['run', '--rm', '--network', 'none', gzip, 'python3', '-c', 'print(6*7)']);
    assert.equal(py.stdout, '42\n');
  });
});
