import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';

/** The two digests of a whole layer: the blob's and its uncompressed tar's (the diff_id). */
export interface LayerDigests {
  blob: string;
  /** The diff_id, or why the blob did not inflate (a damaged member: a fault of this fetch, not a crash). */
  diff: string | Error;
}

/**
 * Hashes a layer blob fed to it in order, and the tar it inflates to. The
 * inflate runs on libuv's threads (node:zlib streams), not on the main thread.
 * A blob that does not inflate is an answer (`diff` is the error), never an
 * exception on its own: the stream's errors are caught where it is created,
 * so a corrupt range can never reach the process as an unhandled error.
 */
export class WholeLayerHash {
  private readonly blobHash = createHash('sha256');
  private readonly diffHash = createHash('sha256');
  private readonly gunzip = createGunzip();
  private failure: Error | undefined;
  private readonly ended: Promise<void>;

  constructor() {
    this.gunzip.on('data', (d: Buffer) => this.diffHash.update(d));
    this.ended = new Promise<void>((resolve) => {
      this.gunzip.on('end', resolve);
      this.gunzip.on('error', (err: Error) => {
        this.failure ??= err;
        resolve();
      });
    });
  }

  /** Feeds the next bytes of the blob; waits while the inflater is behind. */
  async update(bytes: Buffer): Promise<void> {
    this.blobHash.update(bytes);
    if (this.failure) return;
    if (this.gunzip.write(bytes)) return;
    await Promise.race([new Promise<void>((r) => this.gunzip.once('drain', r)), this.ended]);
  }

  async digests(): Promise<LayerDigests> {
    if (!this.failure) this.gunzip.end();
    await this.ended;
    const blob = 'sha256:' + this.blobHash.digest('hex');
    return { blob, diff: this.failure ?? 'sha256:' + this.diffHash.digest('hex') };
  }

  /** Drops the inflater (a run that stopped half way). */
  discard(): void {
    this.gunzip.destroy();
  }
}
