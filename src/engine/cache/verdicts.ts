import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../log/logger.js';

/** What a whole-layer check vouched for: the blob, the TOC (or zstd:chunked manifest) served from it, and the diff_id of its tar. */
export interface LayerIdentity {
  blobDigest: string;
  /** eStargz: the TOC's digest; zstd:chunked: the manifest checksum. Absent: the blob digest alone keys the verdict. */
  tocDigest?: string;
  diffID?: string;
}

const VERSION = 1;

const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** The file's body: one line of JSON, then a line with that JSON's sha256 (so a flipped or cut file is recognised, not trusted). */
function encode(id: LayerIdentity): string {
  const json = JSON.stringify({ v: VERSION, blobDigest: id.blobDigest, tocDigest: id.tocDigest ?? null, diffID: id.diffID ?? null });
  return `${json}\n${sha256Hex(json)}\n`;
}

/**
 * Passed whole-layer checks, remembered in the disk cache's directory
 * (`verdicts/`), so that a restart with a warm cache needs neither a
 * background fetch nor a whole-layer refetch for a layer already verified:
 * its chunks are still re-hashed as they are read from the cache, and the
 * verdict only vouches that those chunks belong to a blob whose digest and
 * diff_id were checked. A file is keyed by everything it vouches for (blob
 * digest, TOC digest or manifest checksum, diff_id), written atomically
 * (temporary file, then rename) and checked on load: a damaged, cut or
 * foreign file is no verdict (the layer is fetched and checked again).
 */
export class LayerVerdicts {
  constructor(private readonly cacheDir: string, private readonly log: Logger) {}

  private pathOf(id: LayerIdentity): string {
    return join(this.cacheDir, 'verdicts', sha256Hex(`${id.blobDigest}\n${id.tocDigest ?? ''}\n${id.diffID ?? ''}`));
  }

  /** Whether a check of exactly this layer passed before. Never throws: a file that cannot be read or does not check out is no verdict. */
  async has(id: LayerIdentity): Promise<boolean> {
    let text: string;
    try {
      text = await readFile(this.pathOf(id), 'utf8');
    } catch {
      return false; // none recorded
    }
    if (text === encode(id)) return true;
    this.log.warn({ blobDigest: id.blobDigest, path: this.pathOf(id) }, 'remembered layer verdict is damaged; ignored, the layer is checked again');
    return false;
  }

  /** Records a passed check. Never throws: a verdict not written only costs a refetch after a restart. */
  async record(id: LayerIdentity): Promise<void> {
    const path = this.pathOf(id);
    // tmp/ is the disk cache's: whatever a crash leaves there is removed at the next open.
    const tmp = join(this.cacheDir, 'tmp', `verdict.${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(join(this.cacheDir, 'verdicts'), { recursive: true });
      await mkdir(join(this.cacheDir, 'tmp'), { recursive: true });
      await writeFile(tmp, encode(id));
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => {}); // may never have been created
      this.log.warn({ blobDigest: id.blobDigest, err: (err as Error).message }, 'could not remember the layer verdict; a restart checks the layer again');
    }
  }
}
