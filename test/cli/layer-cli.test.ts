import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { FIXTURE_DIR, loadFixture } from '../../testkit/fixtures.js';
import { makeLayerTar } from '../../testkit/layer-tar.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const run = promisify(execFile);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('estargz-store layer CLI', () => {
  let dir = '';
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'estargz-cli-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  test('convert prints the five fields, verify and ls accept the result', async () => {
    const tarPath = join(dir, 'in.tar');
    await writeFile(tarPath, await makeLayerTar([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=test\n') },
      { name: 'bin/tool', type: 'file', mode: 0o755, content: Buffer.alloc(300_000, 'x') },
    ]));
    const out = join(dir, 'out.esgz');
    const conv = await cli('layer', 'convert', tarPath, out, '--chunk-size', '65536', '--prioritized-files', 'etc/os-release,nope', '--level', '6');
    assert.equal(conv.code, 0, conv.stderr);
    const result = JSON.parse(conv.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(result), ['digest', 'size', 'diffID', 'tocDigest', 'uncompressedSize']);
    const blob = await readFile(out);
    assert.equal(result.digest, 'sha256:' + createHash('sha256').update(blob).digest('hex'));
    assert.equal(result.size, blob.length);
    assert.match(conv.stderr, /prioritized file "nope" is not in the layer/);

    const ver = await cli('layer', 'verify', out, '--toc-digest', result.tocDigest as string);
    assert.equal(ver.code, 0, ver.stderr);
    assert.match(ver.stdout, /^ok: .* \(matches\), 4 entries, 3 files, 7 chunks, 300009 bytes verified\n$/);

    const ls = await cli('layer', 'ls', out, '--json');
    assert.equal(ls.code, 0, ls.stderr);
    const entries = JSON.parse(ls.stdout) as { path: string }[];
    assert.deepEqual(entries.map((e) => e.path), ['.prefetch.landmark', 'bin/tool', 'etc', 'etc/os-release']);
    const text = await cli('layer', 'ls', out);
    assert.match(text.stdout, /^-0755 0:0 +300000 .* bin\/tool$/m);
  });

  test('ls --json of a fixture equals its tree', async () => {
    const { tree } = await loadFixture('special');
    const ls = await cli('layer', 'ls', fileURLToPath(new URL('special.esgz', FIXTURE_DIR)), '--json');
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout), tree);
  });

  test('verify fails non-zero with the first error', async () => {
    const corrupt = await cli('layer', 'verify', fileURLToPath(new URL('corrupt-basic-chunk.esgz', FIXTURE_DIR)));
    assert.equal(corrupt.code, 1);
    assert.match(corrupt.stderr, /^estargz-store: CHUNK_DIGEST_MISMATCH: chunk of "sizes\/f100k.bin" at file offset 0 .* expected sha256:d8e47333\w+, got sha256:\w+\n$/);
    const wrongToc = await cli('layer', 'verify', fileURLToPath(new URL('basic.esgz', FIXTURE_DIR)), '--toc-digest', 'sha256:' + '0'.repeat(64));
    assert.equal(wrongToc.code, 1);
    assert.match(wrongToc.stderr, /TOC_DIGEST_MISMATCH: TOC digest mismatch: expected sha256:0{64}, the blob's TOC is sha256:08b71dd3/);
    const plain = await cli('layer', 'ls', fileURLToPath(new URL('corrupt-basic-plaingzip.esgz', FIXTURE_DIR)), '--json');
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /NOT_ESTARGZ: not an eStargz blob/);
  });

  test('bad input and bad options are refused with a message', async () => {
    const junk = join(dir, 'junk.tar');
    await writeFile(junk, Buffer.alloc(1024, 0x41));
    const r = await cli('layer', 'convert', junk, join(dir, 'junk.esgz'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /INVALID_TAR: invalid tar header at stream offset 0/);
    await assert.rejects(readFile(join(dir, 'junk.esgz')), /ENOENT/);
    const opt = await cli('layer', 'convert', junk, join(dir, 'x.esgz'), '--chunk-size', '0');
    assert.notEqual(opt.code, 0);
    assert.match(opt.stderr, /--chunk-size must be an integer from 1/);
    const missing = await cli('layer', 'verify', join(dir, 'does-not-exist'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ENOENT/);
  });
});
