// podman 5.4 (Debian 13's, in a chroot: testkit/podman5.ts) with the
// store as its additional layer store, through the store's real FUSE mount and
// a real Distribution registry. podman ≥ 5.1 looks an eStargz layer up by its
// TOC digest (`<base64 ref>/<toc digest>/`); podman ≥ 5.2 hands pull
// credentials to the store through additional-layer-store-auth-helper.
//
// The first run builds the chroot (debootstrap from deb.debian.org: 1.5 min
// on a quiet machine, 3.5 min on a busy one; cached in
// /var/cache/estargz-store/podman5, PODMAN5_REBUILD=1 rebuilds it).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DEFAULT_CONFIG, engineOptions } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import { zstdChunkedContent } from '../../src/engine/layer.js';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient } from '../../src/registry/client.js';
import { BufferSource } from '../../src/estargz/source.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { validateTarSplit } from '../../src/zstdchunked/tar-split-check.js';
import { busyboxLayer, pushTestImage } from '../../testkit/images.js';
import { ensurePodman5Chroot, startPodman5, type Podman5 } from '../../testkit/podman5.js';
import {
  assertNoPodmanLayerGets,
  assertPushPullsBack,
  assertSaveMatchesDiffIds,
  assertServedByStore,
  blobGets,
  manifestLayers,
  podmanLayerGets,
  PYTHON_HELLO,
  PYTHON_ONE_LINER,
  PYTHON_OUTPUT,
  storeLogUntil,
  TOC_ANNOTATION,
  zstdChunkedFlow,
  type ManifestLayer,
  type Podman5Suite,
} from '../../testkit/podman5-flows.js';
import { pythonImageLayers } from '../../testkit/python-image.js';
import { basicAuth, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

async function convert(src: string, dst: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await run(process.execPath, [CLI, 'image', 'convert', src, dst, '--json'], { env, maxBuffer: 16 << 20 });
}

function tocDigests(layers: ManifestLayer[]): string[] {
  return layers.map((l) => {
    const toc = l.annotations?.[TOC_ANNOTATION];
    assert.ok(toc, `layer ${l.digest} has no TOC digest annotation`);
    return toc;
  });
}

describe('podman 5.4 with the store as an additional layer store', () => {
  let reg: Registry;
  let priv: Registry;
  let store: RunningStore;
  let podman: Podman5;
  let work: string;
  let suite: Podman5Suite;
  let esgzLayers: ManifestLayer[];
  const esgz = () => `${reg.host}/e2e/python:esgz`;
  const privRef = () => `${priv.host}/private/tiny:esgz`;

  before(async () => {
    await ensurePodman5Chroot(); // first: a chroot that cannot be built fails the suite at once
    work = await mkdtemp(join(tmpdir(), 'estargz-podman5-test-'));
    reg = await startRegistry();
    await pushTestImage(reg.host, 'e2e/python', 'gzip', { layers: await pythonImageLayers() });
    await convert(`${reg.host}/e2e/python:gzip`, esgz());
    esgzLayers = await manifestLayers(reg, 'e2e/python', 'esgz');

    // A private registry with a password made for this run, so no credentials
    // for it exist anywhere on this machine.
    priv = await startRegistry({ auth: 'htpasswd', users: { p5user: randomBytes(12).toString('hex') } });
    const creds = priv.credentials!;
    await pushTestImage(priv.host, 'private/tiny', 'gzip', { layers: [await busyboxLayer()] }, creds);
    const authFile = join(work, 'convert-auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [priv.host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } } }));
    await convert(`${priv.host}/private/tiny:gzip`, privRef(), { ...process.env, REGISTRY_AUTH_FILE: authFile });

    // The store reads no auth file: for the private registry its only
    // credentials are those podman's auth helper hands over.
    const none = join(work, 'no-auth');
    store = await startStore('background_fetch_idle_sec = 120\n', [], { HOME: none, REGISTRY_AUTH_FILE: join(none, 'auth.json'), XDG_RUNTIME_DIR: none, DOCKER_CONFIG: none });
    podman = await startPodman5({ storeMnt: store.mnt, storeRoot: store.root, insecureRegistries: [reg.host, priv.host] });
    suite = { reg, store, podman, gzipRef: `${reg.host}/e2e/python:gzip` };
  });
  after(async () => {
    await podman?.stop();
    await store?.stop();
    await priv?.stop();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('podman is 5.4', async () => {
    const v = await podman.run(['version', '--format', '{{.Client.Version}}']);
    assert.match(v.stdout, /^5\.4\./);
  });

  test('lazy pull keyed by TOC digest: podman fetches no layer blob, the store under 10% of the layer bytes', async () => {
    const regMark = (await reg.logLines()).length;
    const storeMark = store.logs().length;
    await podman.run(['pull', '-q', esgz()]);
    const gets = await blobGets(reg, regMark);
    assertNoPodmanLayerGets(gets, esgzLayers, podman, 'eStargz');
    const storeBytes = gets.filter((g) => g.agent.startsWith('estargz-store')).reduce((n, g) => n + g.bytes, 0);
    const total = esgzLayers.reduce((n, l) => n + l.size, 0);
    assert.ok(storeBytes > 0, 'the store read nothing from the registry');
    assert.ok(storeBytes < total * 0.1, `the store fetched ${storeBytes} of ${total} layer bytes`);
    // c/storage records the store directory of each layer; podman 5 named it by TOC digest
    assertServedByStore(await podman.imageLayers(esgz()), esgz(), tocDigests(esgzLayers));
    const isResolved = (l: Record<string, unknown>) => l['msg'] === 'layer resolved';
    const lines = await storeLogUntil(store, storeMark, (ls) => ls.filter(isResolved).length >= 2);
    assert.deepEqual(lines.filter(isResolved).map((l) => l['keyedBy']), ['toc', 'toc']);
  });

  test('podman run: echo hello, and a python one-liner', async () => {
    const hello = await podman.run(['run', '--rm', esgz(), 'echo', 'hello']);
    assert.equal(hello.stdout, 'hello\n');
    const py = await podman.run(['run', '--rm', esgz(), 'python3', '-c', PYTHON_ONE_LINER]);
    assert.equal(py.stdout, PYTHON_OUTPUT);
  });

  test('podman save writes layers whose digests are the config diff_ids', async () => {
    await assertSaveMatchesDiffIds(podman, esgz(), 'esgz-save');
  });

  test('podman push to another repository; that image pulls back and runs', async () => {
    await assertPushPullsBack(suite, esgz(), 'e2e/pushed5', 'v1', PYTHON_HELLO);
  });

  test('private registry: without the auth helper podman pulls by itself; with it, the pull is lazy', async () => {
    const creds = priv.credentials!;
    const layers = await manifestLayers(priv, 'private/tiny', 'esgz', { authorization: basicAuth(creds) });
    // podman's auth file is in the chroot's own /run: the store cannot read it.
    await podman.run(['login', '--tls-verify=false', '-u', creds.username, '-p', creds.password, priv.host]);

    // Control: no helper, so the store has no credentials and refuses the layer.
    await podman.setAuthHelper(false);
    let mark = (await priv.logLines()).length;
    let storeMark = store.logs().length;
    await podman.run(['pull', '-q', privRef()]);
    const refused = (l: Record<string, unknown>) => l['result'] === 'failed' && l['ref'] === privRef();
    assert.ok((await storeLogUntil(store, storeMark, (ls) => ls.some(refused))).some(refused), 'the store did not refuse the layer');
    assert.ok(podmanLayerGets(await blobGets(priv, mark), layers, podman).length > 0, 'without the helper podman should pull the layer itself');
    assert.deepEqual((await podman.imageLayers(privRef())).filter((l) => l.additionalLayer !== undefined), []);
    await podman.run(['rmi', '-f', privRef()]);

    // With the helper. The failed lookup just above is still in the store's
    // failure memory: the credentials must clear it.
    await podman.setAuthHelper(true);
    mark = (await priv.logLines()).length;
    storeMark = store.logs().length;
    await podman.run(['pull', '-q', privRef()]);
    const helperLog = await podman.authHelperLog();
    assert.match(helperLog, /^called$/m, 'podman did not run the auth helper');
    assert.doesNotMatch(helperLog, /^exit [1-9]/m, `the auth helper failed:\n${helperLog}`);
    const forImage = (l: Record<string, unknown>) => l['msg'] === 'credentials received from the auth helper' && Array.isArray(l['refs']) && l['refs'].includes(privRef());
    const lines = await storeLogUntil(store, storeMark, (ls) => ls.some(forImage));
    assert.ok(lines.some(forImage), 'the store did not receive credentials for the image');
    assertNoPodmanLayerGets(await blobGets(priv, mark), layers, podman, 'private eStargz');
    assertServedByStore(await podman.imageLayers(privRef()), privRef(), tocDigests(layers));

    const out = await podman.run(['run', '--rm', privRef(), 'cat', '/etc/hello']);
    assert.equal(out.stdout, 'hello from the test image\n');
    assert.ok(!store.logs().includes(creds.password), 'the password reached the store log');
    await podman.run(['rmi', '-f', privRef()]);
    // The helper runs on every image podman opens: the other tests do without it.
    await podman.setAuthHelper(false);
  });

  test('zstd:chunked as podman 5 writes it: pulled lazily (podman fetches no layer blob, every layer served by the store keyed by manifest checksum), run, save, push', async (t) => {
    await zstdChunkedFlow(suite);
    // The store's whole-layer check on podman's own zstd:chunked layers (the suite's store waits 120 s before
    // background fetch): an engine of this process fetches each layer whole; its tar, rebuilt from the tar-split
    // and the verified chunks, hashes to the config's diff_id.
    const res = await fetch(`${reg.url}/v2/p5/zstd/manifests/python`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const manifest = await res.json() as { config: { digest: string }; layers: ManifestLayer[] };
    const config = await (await fetch(`${reg.url}/v2/p5/zstd/blobs/${manifest.config.digest}`)).json() as { rootfs: { diff_ids: string[] } };
    const client = new RegistryClient({ log: testLog(), retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 100 }, credentials: { name: 'none', lookup: async () => undefined } });
    const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { fetch: { noPrefetch: true, background: { idleMs: 0, maxRuns: 1, maxWholeFailures: 1 } } }), testTelemetry());
    try {
      for (const [i, l] of manifest.layers.entries()) {
        const blob = await RemoteBlob.open(client, { registry: reg.host, repository: 'p5/zstd' }, l.digest, { expectedSize: l.size });
        const z = await openZstdChunked(blob, l.annotations, { checkTarSplit: engine.pool.checkTarSplit });
        // What the tar-split check would cost the FUSE thread (the store runs it in a worker).
        const ms: string[] = [];
        for (let k = 0; k < 3; k++) {
          const started = performance.now();
          await validateTarSplit(z.tarSplit, z.tarSplitPosition, z.manifest);
          ms.push((performance.now() - started).toFixed(1));
        }
        // What stays on the main thread at open: footer, manifest checksum, decode and parse, the index.
        const whole = new BufferSource(await blob.read(0, blob.size));
        const opened: string[] = [];
        for (let k = 0; k < 3; k++) {
          const started = performance.now();
          await openZstdChunked(whole, l.annotations, { checkTarSplit: async () => ({ headers: 0, tarSize: z.tarSize }) });
          opened.push((performance.now() - started).toFixed(1));
        }
        t.diagnostic(`layer ${i}: ${l.size} B, ${z.manifest.entries.length} manifest entries, tar ${z.tarSize} B, tar-split ${z.tarSplit.length} B; validateTarSplit on this thread ${ms.join(', ')} ms; the rest of the open ${opened.join(', ')} ms`);
        const layer = engine.openLayer({ id: `p5-zstd-${i}`, blobDigest: l.digest, diffID: config.rootfs.diff_ids[i]!, fetcher: blob, content: zstdChunkedContent(z) });
        layer.startBackgroundFetch();
        await layer.backgroundDone();
        assert.equal(layer.state, 'complete', `layer ${i}: ${layer.failureReason}`);
        await layer.close();
      }
    } finally {
      await engine.close();
      await client.close();
    }
  });
});
