import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { DecodePool } from '../engine/decode-pool.js';
import type { Engine } from '../engine/engine.js';
import { openEstargz } from '../estargz/open.js';
import { BufferSource } from '../estargz/source.js';
import type { TocEntryJson } from '../estargz/toc.js';
import { tocOnlyBlob } from '../estargz/writer/toc-only-blob.js';
import { warmUpHttp } from '../registry/transport.js';
import type { Logger } from '../log/logger.js';

/**
 * Runs the code a first pull needs once while the daemon starts, before it
 * mounts, so the first lookup after a (re)start does not pay for it. Measured
 * here on a cold process: undici's first request costs ~12 ms more than the
 * next one, V8 runs new code in its interpreter until it is hot (a cold index
 * build of a 6,700-entry TOC took about 3× its warm time), and each decode
 * worker's first task ~3 ms. Everything is synthetic and local: no registry
 * is contacted. A failure is logged and ignored: it only costs the first
 * pull that time.
 */
export async function warmUp(engine: Engine, log: Logger): Promise<void> {
  const started = performance.now();
  const steps: [string, Promise<void>][] = [['http', warmUpHttp()], ['reader', warmUpReader()], ['decoders', warmUpDecoders(engine.pool)]];
  const results = await Promise.allSettled(steps.map(([, step]) => step));
  results.forEach((r, i) => {
    if (r.status === 'rejected') log.warn({ step: steps[i]![0], err: (r.reason as Error)?.message ?? String(r.reason) }, 'warm-up step failed');
  });
  log.debug({ ms: Math.round(performance.now() - started) }, 'warm-up done');
}

/** Entries in a TOC like a layer's: directories of small files, one of them chunked. */
function sampleEntries(dirs: number, filesPerDir: number): TocEntryJson[] {
  const digest = `sha256:${'0'.repeat(64)}`;
  const entries: TocEntryJson[] = [];
  let offset = 0;
  for (let d = 0; d < dirs; d++) {
    entries.push({ name: `usr/lib/d${d}/`, type: 'dir', mode: 0o755, modtime: '2024-01-01T00:00:00Z', uid: 0, gid: 0 });
    for (let f = 0; f < filesPerDir; f++) {
      const name = `usr/lib/d${d}/f${f}.so`;
      entries.push({ name, type: 'reg', size: 2, mode: 0o644, modtime: '2024-01-01T00:00:00Z', uid: 0, gid: 0, offset, digest, chunkDigest: digest });
      offset += 1;
      entries.push({ name: `usr/lib/d${d}/l${f}`, type: 'symlink', linkName: name, mode: 0o777, uid: 0, gid: 0 });
    }
  }
  entries.push({ name: 'usr/lib/big', type: 'reg', size: 4, mode: 0o644, offset, chunkSize: 2, digest, chunkDigest: digest });
  entries.push({ name: 'usr/lib/big', type: 'chunk', offset: offset + 1, chunkOffset: 2, chunkSize: 2, chunkDigest: digest });
  return entries;
}

/** Opens a TOC-only blob a few times: enough calls for V8 to optimize the open, parse and index code. */
async function warmUpReader(): Promise<void> {
  const entries = sampleEntries(20, 50);
  const blob = tocOnlyBlob(entries, entries.length + 2);
  for (let i = 0; i < 3; i++) await openEstargz(new BufferSource(blob));
}

/**
 * One real task per worker kept idle (a gzip member and its digest), so each
 * loads and compiles the decoder; with none kept, one small foreground task,
 * which the pool decodes on this thread (see DecodePool.inlineMaxBytes).
 */
async function warmUpDecoders(pool: DecodePool): Promise<void> {
  const inline = pool.idleThreads === 0;
  const plain = randomBytes(inline ? 4 << 10 : 64 << 10);
  const member = gzipSync(plain);
  const digest = `sha256:${createHash('sha256').update(plain).digest('hex')}`;
  const ref = { path: 'warm-up', fileOffset: 0, innerOffset: 0, size: plain.length, digest, blobOffset: 0 };
  // The workers kept while idle: tasks for more would start workers that then leave again.
  await Promise.all(Array.from({ length: Math.max(1, pool.idleThreads) }, async () => {
    const [out] = await pool.run(new Uint8Array(member).buffer, [{ offset: 0, length: member.length, refs: [ref] }], inline ? 'foreground' : 'background');
    if (!out || !Buffer.isBuffer(out)) throw new Error(`decode worker answered ${JSON.stringify(out)}`);
  }));
}
