import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';

/**
 * The whole-layer check of background fetch, off the main thread: the blob's
 * sha256, and the sha256 of its gunzipped stream (the diffID). The main
 * thread sends the blob in order, each piece transferred; every piece is
 * acknowledged once gunzip has taken it (the sender's backpressure), and
 * `end` is answered with both digests, or with why gunzip failed.
 */
/** A piece: a transferred ArrayBuffer, or a range of shared memory (read only, on both sides). */
export type ToDigest = { buf: ArrayBuffer | SharedArrayBuffer; offset?: number; length?: number } | { end: true };
export type FromDigest = { ack: true } | { blobDigest: string; diffID: string } | { blobDigest: string; error: string };

function run(port: NonNullable<typeof parentPort>): void {
  const blob = createHash('sha256');
  const diff = createHash('sha256');
  // 1 MiB outputs: a 100 MB layer is ~100 callbacks, not ~6,000 of zlib's default 16 KiB.
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  let failed: string | undefined;
  const send = (m: FromDigest): void => port.postMessage(m);
  // Every piece is acknowledged exactly once: by its write callback, or, when gunzip fails
  // first (a callback zlib may then never call), by the error; the sender counts on it.
  const unacked = new Set<() => void>();
  gunzip.on('data', (d: Buffer) => diff.update(d));
  gunzip.on('error', (err) => {
    failed ??= err.message;
    for (const ack of [...unacked]) ack();
  });
  port.on('message', (m: ToDigest) => {
    if ('buf' in m) {
      const b = Buffer.from(m.buf, m.offset ?? 0, m.length ?? m.buf.byteLength - (m.offset ?? 0));
      blob.update(b);
      if (failed) return send({ ack: true });
      const ack = (): void => {
        if (unacked.delete(ack)) send({ ack: true });
      };
      unacked.add(ack);
      gunzip.write(b, ack);
      return;
    }
    const finish = (): void => {
      if (failed) send({ blobDigest: 'sha256:' + blob.digest('hex'), error: failed });
      else send({ blobDigest: 'sha256:' + blob.digest('hex'), diffID: 'sha256:' + diff.digest('hex') });
    };
    if (failed) finish();
    else {
      gunzip.once('end', finish);
      gunzip.once('error', finish);
      gunzip.end();
    }
  });
}

if (parentPort) run(parentPort);
