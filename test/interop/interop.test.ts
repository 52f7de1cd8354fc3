// Two-way interop check against the reference eStargz implementation
// (github.com/containerd/stargz-snapshotter/estargz v0.12.0, Debian source
// package), driven through our small Go program test/interop/go/src/esgzref.
//
//   OURS → REFERENCE: `layer convert` output must pass the reference Open +
//   VerifyTOC + per-chunk verification and list the same entries.
//   REFERENCE → OURS: reference `estargz.Build` output must pass our
//   `layer verify --toc-digest` and list the same entries.
//
// Needs `go` and the estargz source: apt-get install golang-go
// golang-github-containerd-stargz-snapshotter-dev. The test fails (it does
// not skip) when they are missing.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import tar from 'tar-stream';

const execFile = promisify(execFileCb);

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const GO_SRC_ROOT = fileURLToPath(new URL('../../../test/interop/go', import.meta.url));
const DEBIAN_GOCODE = '/usr/share/gocode';
const ESTARGZ_SRC = join(DEBIAN_GOCODE, 'src/github.com/containerd/stargz-snapshotter/estargz');
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js');
const INSTALL_HINT = 'install them with: apt-get install golang-go golang-github-containerd-stargz-snapshotter-dev';

const CHUNK = 65536;
const MTIME = new Date(1_700_000_000 * 1000);
const MAX_BUFFER = 256 * 1024 * 1024;

// ------------------------------------------------------------------ helpers

interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; a non-zero exit or a spawn error becomes an Error with the command line and stderr. */
async function run(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFile(file, args, { cwd: REPO_ROOT, env: env ?? process.env, maxBuffer: MAX_BUFFER });
    return { stdout, stderr };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string; code?: number | string };
    throw new Error(
      `command failed (${e.code ?? 'error'}): ${[file, ...args].join(' ')}\n` +
        `--- stderr ---\n${e.stderr ?? ''}\n--- stdout ---\n${(e.stdout ?? '').slice(0, 4000)}\n${e.message}`,
    );
  }
}

/** Our CLI: node dist/src/cli/main.js ... */
function ours(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args]);
}

let esgzrefBin = '';
// GOMAXPROCS=2: estargz.Build converts GOMAXPROCS sub-blobs in parallel and
// concatenates them; pin it so that the multi-part path is always exercised
// and the bytes don't depend on the machine.
const esgzrefEnv: NodeJS.ProcessEnv = { ...process.env, GOMAXPROCS: '2' };

function esgzref(...args: string[]): Promise<RunResult> {
  return run(esgzrefBin, args, esgzrefEnv);
}

interface BuildInfo {
  digest: string;
  size: number;
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
}

function parseBuildInfo(stdout: string, who: string): BuildInfo {
  let v: unknown;
  try {
    v = JSON.parse(stdout);
  } catch {
    throw new Error(`${who} did not print JSON: ${JSON.stringify(stdout)}`);
  }
  const o = v as Record<string, unknown>;
  for (const k of ['digest', 'diffID', 'tocDigest']) {
    assert.match(String(o[k]), /^sha256:[0-9a-f]{64}$/, `${who}: ${k}`);
  }
  for (const k of ['size', 'uncompressedSize']) {
    assert.ok(Number.isSafeInteger(o[k]) && (o[k] as number) > 0, `${who}: ${k} = ${String(o[k])}`);
  }
  return o as unknown as BuildInfo;
}

function parseList(stdout: string, who: string): unknown[] {
  let v: unknown;
  try {
    v = JSON.parse(stdout);
  } catch {
    throw new Error(`${who} did not print JSON: ${JSON.stringify(stdout.slice(0, 500))}`);
  }
  assert.ok(Array.isArray(v), `${who}: expected a JSON array`);
  return v;
}

const sha256hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random bytes (sha256 in counter mode). */
function randomBytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; i++) {
    off += createHash('sha256').update(`${seed}:${i}`).digest().copy(out, off);
  }
  return out;
}

/** Compressible text of exactly n bytes. */
function textBytes(seed: string, n: number): Buffer {
  const lines: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const line = `${seed} line ${i}: the quick brown fox jumps over the lazy dog\n`;
    lines.push(line);
    len += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, n);
}

// ------------------------------------------------------------------ test layers

type PackHeader = Partial<tar.Header> & { name: string; pax?: Record<string, string> };
type LayerEntry = { header: PackHeader; body?: Buffer };

function dir(name: string, extra: Partial<PackHeader> = {}): LayerEntry {
  return { header: { name, type: 'directory', mode: 0o755, mtime: MTIME, uid: 0, gid: 0, uname: 'root', gname: 'root', ...extra } };
}
function file(name: string, body: Buffer, extra: Partial<PackHeader> = {}): LayerEntry {
  return { header: { name, type: 'file', mode: 0o644, mtime: MTIME, uid: 0, gid: 0, uname: 'root', gname: 'root', size: body.length, ...extra }, body };
}
function special(name: string, type: 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo', extra: Partial<PackHeader>): LayerEntry {
  const mode = type === 'symlink' ? 0o777 : 0o644;
  return { header: { name, type, mode, mtime: MTIME, uid: 0, gid: 0, uname: 'root', gname: 'root', ...extra } };
}

/** Writes the entries with tar-stream and returns the tar bytes. */
async function packTar(entries: LayerEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const collected = (async () => {
    const parts: Buffer[] = [];
    for await (const chunk of pack) parts.push(chunk as Buffer);
    return Buffer.concat(parts);
  })();
  for (const { header, body } of entries) {
    if (body) pack.entry(header, body);
    else pack.entry(header);
  }
  pack.finalize();
  return collected;
}

const LONG_SPLIT = `long/${'a'.repeat(60)}/${'b'.repeat(80)}.txt`; // > 100 bytes: ustar prefix/name split
const LONG_COMPONENT = `long/${'c'.repeat(120)}`; // one 120-byte component: needs a PAX path record
const LONG_TARGET = `../${'d'.repeat(130)}`; // > 100-byte symlink target: PAX linkpath

const PRIORITIZED = ['top.txt', 'big/text-200k.txt'];

function fullLayerEntries(): LayerEntry[] {
  return [
    file('top.txt', Buffer.from('top-level file\n')),
    dir('etc/'),
    file('etc/hostname', Buffer.from('interop\n')),
    special('etc/hostname-hard', 'link', { linkname: 'etc/hostname' }),
    special('etc/link-rel', 'symlink', { linkname: 'hostname' }),
    special('abs-link', 'symlink', { linkname: '/etc/hostname' }),
    special('dangling', 'symlink', { linkname: 'no/such/target' }),
    special('long-target-link', 'symlink', { linkname: LONG_TARGET }),
    file('epoch-file', Buffer.from('mtime 0\n'), { mtime: new Date(0) }),

    dir('sizes/'),
    file('sizes/empty', Buffer.alloc(0)),
    file('sizes/one', Buffer.from('x')),
    file('sizes/f4095', randomBytes('f4095', 4095)),
    file('sizes/f4096', textBytes('f4096', 4096)),
    file('sizes/f4097', randomBytes('f4097', 4097)),

    // Chunking with a 64 KiB chunk size: boundaries and boundaries ± 1.
    dir('big/'),
    file('big/chunk-minus-1.bin', randomBytes('c-1', CHUNK - 1)),
    file('big/chunk-exact.bin', randomBytes('c0', CHUNK)),
    file('big/chunk-plus-1.bin', randomBytes('c+1', CHUNK + 1)),
    file('big/three-chunks-minus-1.bin', randomBytes('3c-1', 3 * CHUNK - 1)),
    file('big/three-chunks-exact.bin', randomBytes('3c0', 3 * CHUNK)),
    file('big/three-chunks-plus-1.bin', randomBytes('3c+1', 3 * CHUNK + 1)),
    file('big/text-200k.txt', textBytes('text', 200_000)),
    special('big/text-hardlink', 'link', { linkname: 'big/text-200k.txt' }),

    // Devices and fifo.
    dir('dev/'),
    special('dev/null', 'character-device', { mode: 0o666, devmajor: 1, devminor: 3 }),
    special('dev/loop0', 'block-device', { mode: 0o660, devmajor: 7, devminor: 0, gid: 6, gname: 'disk' }),
    special('dev/fifo', 'fifo', { mode: 0o600 }),

    // suid / sgid / sticky.
    dir('bin/'),
    file('bin/suid', Buffer.from('#!/bin/sh\n'), { mode: 0o4755 }),
    file('bin/sgid', Buffer.from('#!/bin/sh\n'), { mode: 0o2755, gid: 50, gname: 'staff' }),
    dir('tmp/', { mode: 0o1777 }),
    dir('shared/', { mode: 0o2775, gid: 100, gname: 'users' }),

    // Owners with and without names.
    dir('home/alice/', { uid: 1000, gid: 1000, uname: 'alice', gname: 'alice' }),
    file('home/alice/notes.txt', Buffer.from('alice\n'), { uid: 1000, gid: 100, uname: 'alice', gname: 'users', mode: 0o600 }),
    file('home/alice/other-group', Buffer.from('alice again\n'), { uid: 1000, gid: 1001, uname: 'alice', gname: 'staff2' }),
    file('home/nobody-owned', Buffer.from('ids only\n'), { uid: 4242, gid: 4343, uname: '', gname: '' }),

    // xattrs (PAX SCHILY.xattr.*), on a file and on a directory.
    dir('xattr/', { pax: { 'SCHILY.xattr.user.dir': 'on-a-dir' } }),
    file('xattr/file', Buffer.from('has xattrs\n'), {
      pax: { 'SCHILY.xattr.user.foo': 'bar', 'SCHILY.xattr.user.tricky': 'a=b\nc d' },
    }),

    // Long names.
    file(LONG_SPLIT, Buffer.from('long path (ustar prefix)\n')),
    file(LONG_COMPONENT, Buffer.from('long path (pax)\n')),

    // Whiteouts.
    file('etc/.wh.removed', Buffer.alloc(0)),
    dir('opaque/'),
    file('opaque/.wh..wh..opq', Buffer.alloc(0)),
    file('opaque/kept', Buffer.from('kept\n')),
  ];
}

interface Layer {
  name: string;
  tar: string;
}

// ------------------------------------------------------------------ setup

let work = '';
const layers: Layer[] = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'esgz-interop-'));

  // Build esgzref (GOPATH mode: Debian ships the reference as GOPATH source, no module download possible).
  try {
    await execFile('go', ['version']);
  } catch (err) {
    throw new Error(`the Go toolchain ("go") is not available (${(err as Error).message}); ${INSTALL_HINT}`);
  }
  try {
    await access(join(ESTARGZ_SRC, 'estargz.go'));
  } catch {
    throw new Error(`the reference estargz source is missing at ${ESTARGZ_SRC}; ${INSTALL_HINT}`);
  }
  esgzrefBin = join(work, 'esgzref');
  try {
    await run('go', ['build', '-o', esgzrefBin, 'esgzref'], {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: `${GO_SRC_ROOT}:${DEBIAN_GOCODE}`,
      GOFLAGS: '',
      GOCACHE: join(work, 'gocache'),
      CGO_ENABLED: '0',
    });
  } catch (err) {
    throw new Error(`building esgzref (GOPATH mode) failed; are the packages complete? ${INSTALL_HINT}\n${(err as Error).message}`);
  }

  try {
    await access(CLI);
  } catch {
    throw new Error(`our CLI is not built at ${CLI}: run "npm run build" first`);
  }

  for (const [name, entries] of [
    ['full', fullLayerEntries()],
    ['empty', []],
  ] as const) {
    const path = join(work, `${name}.tar`);
    await writeFile(path, await packTar([...entries]));
    layers.push({ name, tar: path });
  }
  // The empty layer is exactly the two zero end blocks.
  assert.equal((await readFile(join(work, 'empty.tar'))).length, 1024);
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

function layer(name: string): Layer {
  const l = layers.find((x) => x.name === name);
  if (!l) throw new Error(`setup did not create layer ${name}`);
  return l;
}

// ------------------------------------------------------------------ checks

/** sha256/size of the blob and of its gunzipped stream must match what the converter printed. */
async function checkBlobDigests(blob: string, info: BuildInfo, who: string): Promise<void> {
  const bytes = await readFile(blob);
  assert.equal(`sha256:${sha256hex(bytes)}`, info.digest, `${who}: sha256 of ${blob} vs printed digest`);
  assert.equal(bytes.length, info.size, `${who}: blob size vs printed size`);
  const { stdout } = await execFile('gunzip', ['-c', blob], { encoding: 'buffer', maxBuffer: MAX_BUFFER });
  assert.equal(stdout.length, info.uncompressedSize, `${who}: gunzip -c length vs uncompressedSize`);
  assert.equal(`sha256:${sha256hex(stdout)}`, info.diffID, `${who}: sha256 of gunzip -c vs diffID`);
}

/** Our converter: layer convert IN.tar OUT.esgz --chunk-size 65536. */
async function convertOurs(l: Layer, blob: string): Promise<BuildInfo> {
  const info = parseBuildInfo((await ours('layer', 'convert', l.tar, blob, '--chunk-size', String(CHUNK))).stdout, 'layer convert');
  await checkBlobDigests(blob, info, 'layer convert');
  return info;
}

/** The reference converter: esgzref build IN.tar OUT.esgz -chunk 65536 [-prioritized a,b]. */
async function buildReference(l: Layer, blob: string, prioritized: string[] = []): Promise<BuildInfo> {
  const args = ['build', l.tar, blob, '-chunk', String(CHUNK)];
  if (prioritized.length) args.push('-prioritized', prioritized.join(','));
  const info = parseBuildInfo((await esgzref(...args)).stdout, 'esgzref build');
  await checkBlobDigests(blob, info, 'esgzref build');
  // Sanity: the reference accepts its own blob.
  await esgzref('verify', blob, info.tocDigest);
  return info;
}

async function oursToReference(l: Layer): Promise<{ blob: string; list: unknown[] }> {
  const blob = join(work, `${l.name}.ours.esgz`);
  const info = await convertOurs(l, blob);

  const verified = await esgzref('verify', blob, info.tocDigest);
  assert.match(verified.stdout, /^ok \d+ files\n?$/, 'esgzref verify output');

  const refList = parseList((await esgzref('ls', blob)).stdout, 'esgzref ls');
  const ourList = parseList((await ours('layer', 'ls', blob, '--json')).stdout, 'layer ls --json');
  assert.deepEqual(ourList, refList, `layer ls --json vs the reference reader, on our blob ${l.name}`);
  return { blob, list: refList };
}

async function referenceToOurs(l: Layer, prioritized: string[] = []): Promise<{ blob: string; list: unknown[] }> {
  const tag = prioritized.length ? 'ref-prio' : 'ref';
  const blob = join(work, `${l.name}.${tag}.esgz`);
  const info = await buildReference(l, blob, prioritized);

  await ours('layer', 'verify', blob, '--toc-digest', info.tocDigest);

  const refList = parseList((await esgzref('ls', blob)).stdout, 'esgzref ls');
  const ourList = parseList((await ours('layer', 'ls', blob, '--json')).stdout, 'layer ls --json');
  assert.deepEqual(ourList, refList, `layer ls --json vs the reference reader, on the reference blob ${l.name} (${tag})`);
  return { blob, list: refList };
}

type Listed = { path: string; type: string; sha256: string | null; size: number };

function landmarks(list: unknown[]): string[] {
  return (list as Listed[]).map((e) => e.path).filter((p) => p === '.prefetch.landmark' || p === '.no.prefetch.landmark');
}

// ------------------------------------------------------------------ tests

test('full layer: ours → reference (esgzref verify + ls)', async () => {
  const { list } = await oursToReference(layer('full'));
  const paths = (list as Listed[]).map((e) => e.path);
  for (const p of ['big/three-chunks-plus-1.bin', LONG_SPLIT, LONG_COMPONENT, 'etc/.wh.removed', 'opaque/.wh..wh..opq', 'dev/null', 'dev/fifo']) {
    assert.ok(paths.includes(p), `reference listing of our blob lacks ${p}`);
  }
  assert.deepEqual(landmarks(list), ['.no.prefetch.landmark']);
});

test('full layer: reference → ours (layer verify + ls)', async () => {
  const { list } = await referenceToOurs(layer('full'));
  assert.deepEqual(landmarks(list), ['.no.prefetch.landmark']);
});

test('full layer, prioritized files: reference → ours (layer verify + ls)', async () => {
  const { list } = await referenceToOurs(layer('full'), PRIORITIZED);
  assert.deepEqual(landmarks(list), ['.prefetch.landmark']);
});

test('same tar through both converters: the reference reader lists the same entries', async () => {
  for (const name of ['full', 'empty']) {
    const l = layer(name);
    const oursBlob = join(work, `${name}.same-ours.esgz`);
    const refBlob = join(work, `${name}.same-ref.esgz`);
    await convertOurs(l, oursBlob);
    await buildReference(l, refBlob);
    const a = parseList((await esgzref('ls', oursBlob)).stdout, 'esgzref ls (our blob)');
    const b = parseList((await esgzref('ls', refBlob)).stdout, 'esgzref ls (reference blob)');
    assert.deepEqual(a, b, `layer ${name}: our converter vs the reference converter`);
  }
});

test('empty layer: ours → reference', async () => {
  const { list } = await oursToReference(layer('empty'));
  assert.deepEqual(landmarks(list), ['.no.prefetch.landmark']);
  assert.equal(list.length, 1);
});

test('empty layer: reference → ours', async () => {
  const { list } = await referenceToOurs(layer('empty'));
  assert.deepEqual(landmarks(list), ['.no.prefetch.landmark']);
  assert.equal(list.length, 1);
});
