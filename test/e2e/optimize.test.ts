import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { busyboxLayer, pushTestImage, type TestImage } from '../../testkit/images.js';
import type { SpecEntry } from '../../testkit/layer-tar.js';
import { startPodman } from '../../testkit/podman.js';
import { registryFetch, startRegistry, type Registry } from '../../testkit/registry.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], timeoutMs = 300_000, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs, maxBuffer: 16 << 20, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const file = (name: string, text: string): SpecEntry => ({ name, type: 'file', content: Buffer.from(text) });

/**
 * Two layers: busybox, /etc/base.txt, /etc/shadowed.txt and /etc/gone.txt
 * below; /app files, a new /etc/shadowed.txt and a whiteout of
 * /etc/gone.txt above.
 */
async function twoLayers(): Promise<SpecEntry[][]> {
  return [
    [...await busyboxLayer(), file('etc/base.txt', 'base\n'), file('etc/shadowed.txt', 'lower\n'), file('etc/gone.txt', 'gone\n'), file('etc/unread.txt', 'x\n')],
    [
      { name: 'app/', type: 'directory' },
      file('app/data1.txt', 'one\n'),
      file('app/data2.txt', 'two\n'),
      file('app/unread.txt', 'never read\n'),
      { name: 'etc/', type: 'directory' },
      file('etc/shadowed.txt', 'upper\n'),
      { name: 'etc/.wh.gone.txt', type: 'file', content: Buffer.alloc(0) },
    ],
  ];
}

/** The workload: reads files of both layers in a known order; /etc/gone.txt is whited out (cat fails on it). */
const WORKLOAD = ['/bin/sh', '-c', 'cat /app/data2.txt /etc/base.txt /etc/shadowed.txt /app/data1.txt; cat /etc/gone.txt 2>/dev/null; true'];
/** Per layer, in the order of first read: busybox is read when /bin/sh is started. */
const EXPECTED = [['bin/busybox', 'etc/base.txt'], ['app/data2.txt', 'etc/shadowed.txt', 'app/data1.txt']];

interface LayerTar {
  /** Entry names in blob order. */
  names: string[];
  /** Names of regular files before the landmark (the prioritized part), landmark excluded. */
  prioritized: string[];
  landmark: string | undefined;
}

/** Reads a pushed layer's tar order from the registry (an eStargz blob is a gzip stream of a tar). */
async function layerTar(reg: Registry, repo: string, digest: string): Promise<LayerTar> {
  const blob = Buffer.from(await (await registryFetch(`${reg.url}/v2/${repo}/blobs/${digest}`)).arrayBuffer());
  const extract = tar.extract();
  const entries: { name: string; type: string }[] = [];
  extract.on('entry', (h, stream, next) => {
    entries.push({ name: h.name, type: h.type ?? 'file' });
    stream.on('end', next);
    stream.resume();
  });
  const done = new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(gunzipSync(blob));
  await done;
  const names = entries.map((e) => e.name);
  const landmarkAt = names.findIndex((n) => n === '.prefetch.landmark' || n === '.no.prefetch.landmark');
  return {
    names,
    landmark: names[landmarkAt],
    prioritized: entries.slice(0, Math.max(0, landmarkAt)).filter((e) => e.type === 'file').map((e) => e.name),
  };
}

async function manifestLayers(reg: Registry, repo: string, tag: string): Promise<string[]> {
  const res = await registryFetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(res.status, 200, `manifest ${repo}:${tag}`);
  return ((await res.json()) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
}

/** Mounts and directories image optimize made: none may be left once it returned. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(tmpdir())) if (name.startsWith('estargz-optimize-')) found.push(join(tmpdir(), name));
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    if (line.includes('estargz-optimize-')) found.push(`mount ${line}`);
  }
  return found;
}

describe('estargz-store image optimize', () => {
  let reg: Registry;
  let image: TestImage;
  let work: string;
  const repo = 'opt/app';
  const src = () => `${reg.host}/${repo}:gzip`;

  before(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'optimize-test-'));
    image = await pushTestImage(reg.host, repo, 'gzip', { layers: await twoLayers(), oci: true });
  });
  after(async () => {
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('records the files the workload reads, per layer in read order, and puts them first in DST with the prefetch landmark; DST runs', { timeout: 600_000 }, async () => {
    const r = await cli(['image', 'optimize', src(), `${reg.host}/${repo}:opt`, '--json', '--progress', 'none', '--timeout', '120', '--', ...WORKLOAD]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { recorded: { layer: number; digest: string; paths: string[] }[]; timedOut: boolean; converted: { digest: string } };
    assert.deepEqual(out.recorded.map((l) => l.paths), EXPECTED);
    assert.deepEqual(out.recorded.map((l) => l.digest), image.layers.map((l) => l.digest));
    assert.equal(out.timedOut, false);
    // The workload's output came through (on stderr).
    assert.match(r.stderr, /two\nbase\nupper\none\n/);
    const layers = await manifestLayers(reg, repo, 'opt');
    for (const [i, digest] of layers.entries()) {
      const t = await layerTar(reg, repo, digest);
      assert.equal(t.landmark, '.prefetch.landmark', `layer ${i + 1}: ${t.names.join(' ')}`);
      assert.deepEqual(t.prioritized, EXPECTED[i], `layer ${i + 1}: ${t.names.join(' ')}`);
      assert.ok(t.names.includes('stargz.index.json'));
    }
    assert.deepEqual(await leftovers(), []);

    // DST is an ordinary eStargz image: podman pulls and runs it (as a plain image, from its own storage).
    const podman = await startPodman({ registriesExtra: `[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n` });
    try {
      const ran = await podman.run(['run', '--rm', '--network', 'none', `${reg.host}/${repo}:opt`, ...WORKLOAD]);
      assert.equal(ran.stdout, 'two\nbase\nupper\none\n');
    } finally {
      await podman.cleanup();
    }
  });

  test('without a command: the image\'s own command runs; a layer nothing was read from gets the no-prefetch landmark', { timeout: 600_000 }, async () => {
    const r = await cli(['image', 'optimize', src(), `${reg.host}/${repo}:own`, '--json', '--progress', 'none']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { recorded: { paths: string[] }[] };
    // The image's command is /bin/sh, which reads its (empty) standard input and exits.
    assert.deepEqual(out.recorded.map((l) => l.paths), [['bin/busybox'], []]);
    const layers = await manifestLayers(reg, repo, 'own');
    assert.deepEqual((await layerTar(reg, repo, layers[0]!)).prioritized, ['bin/busybox']);
    const upper = await layerTar(reg, repo, layers[1]!);
    assert.equal(upper.landmark, '.no.prefetch.landmark');
    assert.equal(upper.names[0], '.no.prefetch.landmark');
  });

  test('--record-only writes the list; image convert --prioritized-files @FILE gives the same order', { timeout: 600_000 }, async () => {
    const list = join(work, 'list.txt');
    const r = await cli(['image', 'optimize', src(), `${reg.host}/${repo}:unused`, '--record-only', list, '--', ...WORKLOAD]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`wrote ${list}`));
    const text = await readFile(list, 'utf8');
    assert.deepEqual(text.split('\n').filter((l) => l && !l.startsWith('#')), [
      `[layer 1 ${image.layers[0]!.digest}]`, '/bin/busybox', '/etc/base.txt',
      `[layer 2 ${image.layers[1]!.digest}]`, '/app/data2.txt', '/etc/shadowed.txt', '/app/data1.txt',
    ]);
    // Nothing was pushed under DST's tag.
    assert.equal((await registryFetch(`${reg.url}/v2/${repo}/manifests/unused`)).status, 404);

    const c = await cli(['image', 'convert', src(), `${reg.host}/${repo}:fromlist`, '--prioritized-files', `@${list}`, '--progress', 'none']);
    assert.equal(c.code, 0, c.stderr);
    assert.doesNotMatch(c.stderr, /warning/);
    const layers = await manifestLayers(reg, repo, 'fromlist');
    for (const [i, digest] of layers.entries()) assert.deepEqual((await layerTar(reg, repo, digest)).prioritized, EXPECTED[i]);

    // A list recorded from another image is refused.
    await writeFile(join(work, 'other.txt'), `[layer 1 sha256:${'0'.repeat(64)}]\n/bin/busybox\n`);
    const bad = await cli(['image', 'convert', src(), `${reg.host}/${repo}:bad`, '--prioritized-files', `@${join(work, 'other.txt')}`, '--progress', 'none']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /was recorded for sha256:0{64}/);
  });

  test('a workload that never exits is stopped at --timeout; what it read until then is used (a warning, not an error)', { timeout: 600_000 }, async () => {
    const r = await cli(['image', 'optimize', src(), `${reg.host}/${repo}:timeout`, '--json', '--progress', 'none', '--timeout', '5',
      '--cmd', JSON.stringify(['/bin/sh', '-c', 'cat /app/data1.txt; exec /bin/busybox sleep 1000'])]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the workload did not exit within 5 s: stopped it/);
    const out = JSON.parse(r.stdout) as { recorded: { paths: string[] }[]; timedOut: boolean };
    assert.equal(out.timedOut, true);
    assert.deepEqual(out.recorded.map((l) => l.paths), [['bin/busybox'], ['app/data1.txt']]);
    const layers = await manifestLayers(reg, repo, 'timeout');
    assert.deepEqual((await layerTar(reg, repo, layers[1]!)).prioritized, ['app/data1.txt']);
    assert.deepEqual(await leftovers(), []);
  });

  test('an eStargz SRC is converted again with the new order (its old TOC and landmark dropped)', { timeout: 600_000 }, async () => {
    const c = await cli(['image', 'convert', src(), `${reg.host}/${repo}:esgz`, '--progress', 'none']);
    assert.equal(c.code, 0, c.stderr);
    const r = await cli(['image', 'optimize', `${reg.host}/${repo}:esgz`, `${reg.host}/${repo}:esgz-opt`, '--progress', 'none',
      '--', '/bin/sh', '-c', 'cat /app/data1.txt /etc/unread.txt']);
    assert.equal(r.code, 0, r.stderr);
    const layers = await manifestLayers(reg, repo, 'esgz-opt');
    const lower = await layerTar(reg, repo, layers[0]!);
    const upper = await layerTar(reg, repo, layers[1]!);
    assert.deepEqual(lower.prioritized, ['bin/busybox', 'etc/unread.txt']);
    assert.deepEqual(upper.prioritized, ['app/data1.txt']);
    for (const t of [lower, upper]) {
      assert.equal(t.names.filter((n) => n === 'stargz.index.json').length, 1, t.names.join(' '));
      assert.equal(t.names.filter((n) => n.endsWith('.landmark')).length, 1, t.names.join(' '));
    }
  });

  /** Sends SIGINT once stderr contains `trigger`; optimize must exit non-zero, leave nothing behind and push nothing under DST. */
  async function interruptWhen(trigger: string, tag: string): Promise<void> {
    const proc = spawn(process.execPath, [CLI, 'image', 'optimize', src(), `${reg.host}/${repo}:${tag}`, '--timeout', '300',
      '--', '/bin/sh', '-c', 'cat /app/data1.txt; exec /bin/busybox sleep 1000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sent = false;
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && stderr.includes(trigger)) {
        sent = true;
        proc.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
    assert.ok(sent, stderr);
    assert.notEqual(code, 0);
    assert.match(stderr, /estargz-store: interrupted by SIGINT/);
    assert.equal((await registryFetch(`${reg.url}/v2/${repo}/manifests/${tag}`)).status, 404);
    assert.deepEqual(await leftovers(), []);
  }

  test('SIGINT while the workload runs: optimize stops it, cleans up everything and exits non-zero', { timeout: 600_000 }, async () => {
    // The workload's own output: it runs (and has read from the store).
    await interruptWhen('one\n', 'sigint-run');
  });

  test('SIGINT at the start (the first conversion): the same', { timeout: 600_000 }, async () => {
    await interruptWhen('estargz-store: converting', 'sigint-start');
  });

  test('an image that does not run: a clear error, and no mount, container or directory left', { timeout: 600_000 }, async () => {
    const r = await cli(['image', 'optimize', src(), `${reg.host}/${repo}:norun`, '--progress', 'none', '--cmd', '/no/such/program']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /estargz-store: the image does not run \(podman run exited with 12[5-7]\)/);
    assert.equal((await registryFetch(`${reg.url}/v2/${repo}/manifests/norun`)).status, 404);
    assert.deepEqual(await leftovers(), []);
  });

  test('a registry that refuses the push: a clear error, nothing left behind', { timeout: 300_000 }, async () => {
    const locked = await startRegistry({ auth: 'htpasswd' });
    try {
      const r = await cli(['image', 'optimize', src(), `${locked.host}/opt/app:x`, '--progress', 'none', '--', ...WORKLOAD]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /^estargz-store: .*(401|unauthorized|denied|credentials)/im);
      assert.deepEqual(await leftovers(), []);
    } finally {
      await locked.stop();
    }
  });

  test('a DST registry that needs credentials: found in the auth file, given to the private podman too', { timeout: 600_000 }, async () => {
    const locked = await startRegistry({ auth: 'htpasswd' });
    try {
      const { username, password } = locked.credentials!;
      const authFile = join(work, 'auth.json');
      await writeFile(authFile, JSON.stringify({ auths: { [locked.host]: { auth: Buffer.from(`${username}:${password}`).toString('base64') } } }));
      const r = await cli(['image', 'optimize', src(), `${locked.host}/opt/app:x`, '--json', '--progress', 'none', '--', ...WORKLOAD], 300_000,
        { REGISTRY_AUTH_FILE: authFile });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual((JSON.parse(r.stdout) as { recorded: { paths: string[] }[] }).recorded.map((l) => l.paths), EXPECTED);
      assert.deepEqual(await leftovers(), []);
    } finally {
      await locked.stop();
    }
  });

  test('image convert --prioritized-files naming files the image does not have: a warning naming them', { timeout: 300_000 }, async () => {
    const r = await cli(['image', 'convert', src(), `${reg.host}/${repo}:missing`, '--prioritized-files', 'etc/base.txt,/no/such/file,app/data1.txt', '--progress', 'none']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: prioritized file\(s\) not in the image: "\/no\/such\/file"\n/);
    const layers = await manifestLayers(reg, repo, 'missing');
    assert.deepEqual((await layerTar(reg, repo, layers[0]!)).prioritized, ['etc/base.txt']);
    assert.deepEqual((await layerTar(reg, repo, layers[1]!)).prioritized, ['app/data1.txt']);
  });
});
