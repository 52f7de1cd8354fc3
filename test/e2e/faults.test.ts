// The store against a registry that misbehaves: a fault-injecting proxy in
// front of a real Distribution registry flips bytes, resets and truncates
// bodies, lies in Content-Range, shifts bodies and answers 5xx, while the
// background fetch and readers go through it. The daemon must stay up, every
// byte read must be right (or the read fails with EIO), and the layer must end
// complete once the faults stop.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startFaultProxy, type FaultProxy, type FaultRule } from '../../testkit/fault-proxy.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { registryFetch, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const KiB = 1 << 10;

/** Files of every size class: many small ones, some of several chunks. */
function layerFiles(seed: number): { spec: SpecEntry[]; files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  for (let i = 0; i < 60; i++) files.set(`small/f${i}`, randomBytes(200 + ((i * 977) % 9000), seed * 1000 + i));
  for (let i = 0; i < 6; i++) files.set(`big/b${i}`, randomBytes(700 * KiB + i * 131, seed * 1000 + 500 + i));
  const spec: SpecEntry[] = [{ name: 'small/', type: 'directory' }, { name: 'big/', type: 'directory' }];
  for (const [name, content] of files) spec.push({ name, type: 'file', content });
  return { spec, files };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Reads a whole file through the mount: its bytes, or the errno code. */
/**
 * Reads a file to its end as `cat` does: read() until it returns 0. Not
 * FileHandle.readFile(), which stops at the first short read: under faults the
 * kernel may return the pages it has (a short read) when the READ of the next
 * page failed, and only the next read() reports that page's EIO.
 */
async function readThrough(path: string): Promise<Buffer | string> {
  try {
    const fh = await open(path, 'r');
    try {
      const parts: Buffer[] = [];
      for (;;) {
        const { bytesRead, buffer } = await fh.read({ buffer: Buffer.alloc(64 * KiB) });
        if (bytesRead === 0) return Buffer.concat(parts);
        parts.push(buffer.subarray(0, bytesRead));
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** Blob range GETs only: manifests and configs come through clean, so the layer resolves. */
const onBlobRanges = (info: { path: string; headers: Record<string, unknown> }): boolean =>
  info.path.includes('/blobs/') && typeof info.headers['range'] === 'string';

describe('registry faults during background fetch and reads', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let store: RunningStore;
  let ref: string;
  let layers: { digest: string; size: number }[];
  let sources: Map<string, Buffer>[];

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url, { seed: 1234 });
    const one = layerFiles(1);
    const two = layerFiles(2);
    sources = [one.files, two.files];
    await pushTestImage(reg.host, 'faults/img', 'gzip', { layers: [one.spec, two.spec] });
    ref = `${proxy.host}/faults/img:esgz`;
    await run(process.execPath, [CLI, 'image', 'convert', `${proxy.host}/faults/img:gzip`, ref, '--chunk-size', String(256 * KiB)]);
    const manifest = await (await registryFetch(`${reg.url}/v2/faults/img/manifests/esgz`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } })).json() as { layers: { digest: string; size: number }[] };
    layers = manifest.layers;
    store = await startStore([
      'background_fetch_idle_sec = 2', // waits for the readers below to stop, then runs under the faults
      'background_fetch_retry_sec = 1',
      // No blob read-ahead: a request per file, so that the faults meet many requests.
      '[blob]', 'max_retries = 2', 'min_wait_msec = 5', 'max_wait_msec = 50', 'read_ahead_bytes = 0',
      '[cache]', 'memory_bytes = 0', 'max_bytes = 0', // no cache: every read of every pass goes to the registry
    ].join('\n'));
  });

  after(async () => {
    const code = await store?.stop();
    assert.equal(code, 0, 'the store exits cleanly on SIGTERM');
    await proxy?.stop();
    await reg?.stop();
  });

  async function status(): Promise<{ digest: string; state: string; reason?: string }[]> {
    const { stdout } = await run(process.execPath, [CLI, 'status', '--root', store.root, '--json']);
    return (JSON.parse(stdout) as { layers: { digest: string; state: string; reason?: string }[] }).layers;
  }

  test('byte flips, resets, truncations, lying Content-Range, shifted bodies and 5xx: the daemon stays up, 0 wrong bytes, layers end complete', async () => {
    // Resolve both layers with a clean registry, then let the faults loose before any chunk is fetched.
    for (const l of layers) await stat(join(store.layerDir(ref, l.digest), 'diff'));
    const faults: FaultRule[] = [
      { kind: 'flip-bytes', count: 3, probability: 0.25 },
      { kind: 'reset-mid-body', afterBytes: 20 * KiB, probability: 0.1 },
      { kind: 'wrong-content-range', by: 7, probability: 0.1 },
      { kind: 'shift-body', by: 1, probability: 0.1 },
      { kind: 'status', status: 503, probability: 0.05 },
    ].map((r) => ({ ...r, times: Infinity, path: (i) => onBlobRanges(i as never) }) as FaultRule);
    // The background fetch's range of each layer (a layer is smaller than one background range, so it is the
    // whole blob from byte 0, which no reader asks for) is flipped twice for certain, whenever it runs.
    const wholeBlob = new Set(layers.map((l) => `bytes=0-${l.size - 1}`));
    const background = proxy.addFault({ kind: 'flip-bytes', count: 3, times: 2 * layers.length, path: (i) => wholeBlob.has(String(i.headers['range'])) });
    const handles = faults.map((f) => proxy.addFault(f));

    let wrong = 0;
    const wrongReads: string[] = [];
    let eio = 0;
    let good = 0;
    // FAULT_PASSES=N for a longer run (the README's Reliability figures); 3 in CI.
    const passes = Number(process.env.FAULT_PASSES ?? 3);
    for (let pass = 0; pass < passes; pass++) {
      await Promise.all(layers.map(async (l, i) => {
        for (const [name, content] of sources[i]!) {
          const got = await readThrough(join(store.layerDir(ref, l.digest), 'diff', name));
          if (typeof got === 'string') {
            assert.equal(got, 'EIO', `${name}: only EIO may fail a read`);
            eio++;
          } else if (sha(got) !== sha(content)) {
            wrong++;
            let at = 0;
            while (at < Math.min(got.length, content.length) && got[at] === content[at]) at++;
            wrongReads.push(`layer ${i} ${name}: ${got.length} bytes read of ${content.length}, first difference at ${at}`);
          } else {
            good++;
          }
        }
      }));
    }
    assert.equal(wrong, 0, `no wrong byte is ever served: ${wrongReads.join('; ')}`);
    assert.ok(good > 0, `reads succeed under faults (${good} good, ${eio} EIO)`);
    const fired = handles.map((h) => h.hits);
    assert.ok(fired.every((n) => n > 0), `every fault fired: ${fired.join(', ')}`);
    assert.equal(store.proc.exitCode, null, 'the daemon is alive');
    console.log(`# foreground under faults: ${good} good reads, ${eio} EIO, ${wrong} wrong; faults fired ${fired.join(', ')}`);

    // The background fetch runs under the faults (once the readers leave it 2 s, during or after the passes).
    const bgDeadline = Date.now() + 30_000;
    while (Date.now() < bgDeadline && background.hits < 2 * layers.length) await sleep(100);
    assert.equal(background.hits, 2 * layers.length, 'the background fetch met its faults');
    assert.equal(store.proc.exitCode, null, 'the daemon is alive after the background fetch met the faults');

    // The faults stop: background fetch retries what failed and completes both layers.
    proxy.clearFaults();
    const deadline = Date.now() + 90_000;
    let states: { digest: string; state: string; reason?: string }[] = [];
    while (Date.now() < deadline) {
      states = (await status()).filter((s) => layers.some((l) => l.digest === s.digest));
      if (states.length === layers.length && states.every((s) => s.state === 'complete')) break;
      await sleep(250);
    }
    assert.deepEqual(states.map((s) => s.state), layers.map(() => 'complete'), JSON.stringify(states));

    // With the faults gone, every file reads right.
    for (const [i, l] of layers.entries()) {
      for (const [name, content] of sources[i]!) {
        const got = await readThrough(join(store.layerDir(ref, l.digest), 'diff', name));
        assert.ok(Buffer.isBuffer(got) && sha(got) === sha(content), `${name} reads right after the faults`);
      }
    }
    assert.equal(store.proc.exitCode, null, 'the daemon is alive');
    assert.equal((await store.status()).crashes, 0, 'no store process died');
    assert.doesNotMatch(store.logs(), /BUG:/, 'nothing reached the last-resort handler');
    assert.match(store.logs(), /background range failed; fetching it again|chunks failed verification; fetching them again/);
  });
});
