import { createGunzip } from 'node:zlib';
import { EstargzError } from './errors.js';
import { MAX_FOOTER_SIZE, parseFooter, type Footer } from './footer.js';
import { buildLayerIndexYielding, type LayerIndex } from './layer-index.js';
import type { RangedSource } from './source.js';
import { TarParser } from './tar/parser.js';
import { TOC_TAR_NAME, parseTocJson, sha256Digest, type TocJson } from './toc.js';

export const DEFAULT_MAX_TOC_BYTES = 256 << 20;
/** Tail read on open: small layers' TOCs fit, so open costs one range read. */
export const DEFAULT_TAIL_BYTES = 64 << 10;
/** Inflated TOC bytes per piece of the streamed inflate. */
const TOC_INFLATE_PIECE_BYTES = 256 << 10;

export interface OpenOptions {
  /** Trusted TOC digest (the manifest annotation); a mismatch rejects the blob. */
  tocDigest?: string;
  /** Cap on the uncompressed TOC JSON. */
  maxTocBytes?: number;
  /** Bytes read from the end of the blob first; when the TOC member is inside them, open costs one read. */
  tailBytes?: number;
  /**
   * The blob's last bytes, read already (the store reads them while the
   * manifest is on the way): used as the tail read when there are exactly as
   * many as the tail read would ask for, else ignored.
   */
  tail?: Buffer;
}

export interface EstargzBlob {
  size: number;
  footer: Footer;
  /** sha256 of the uncompressed TOC JSON. */
  tocDigest: string;
  /** Uncompressed TOC JSON length. */
  tocSize: number;
  toc: TocJson;
  index: LayerIndex;
}

/**
 * Opens an eStargz blob: footer, TOC member, TOC digest check, index. Costs at
 * most two range reads of `source` (tail, then the TOC member when the tail
 * read did not already include it).
 */
export async function openEstargz(source: RangedSource, opts: OpenOptions = {}): Promise<EstargzBlob> {
  const size = source.size;
  const tailLen = Math.min(size, Math.max(MAX_FOOTER_SIZE, opts.tailBytes ?? DEFAULT_TAIL_BYTES));
  const tail = opts.tail?.length === tailLen ? opts.tail : await source.read(size - tailLen, tailLen);
  const footer = parseFooter(tail, size);
  const tocEnd = size - footer.footerSize;
  const tailStart = size - tailLen;
  const member = footer.tocOffset >= tailStart
    ? tail.subarray(footer.tocOffset - tailStart, tocEnd - tailStart)
    : await source.read(footer.tocOffset, tocEnd - footer.tocOffset);

  const maxTocBytes = opts.maxTocBytes ?? DEFAULT_MAX_TOC_BYTES;
  const tocJson = await extractTocJson(member, footer.tocOffset, maxTocBytes);
  const tocDigest = sha256Digest(tocJson);
  if (opts.tocDigest !== undefined && opts.tocDigest !== tocDigest) {
    throw new EstargzError(
      'TOC_DIGEST_MISMATCH',
      `TOC digest mismatch: expected ${opts.tocDigest}, the blob's TOC is ${tocDigest}`,
      { expected: opts.tocDigest, actual: tocDigest },
    );
  }
  const toc = parseTocJson(tocJson);
  // In slices with turns of the event loop between them: the store's thread answers FUSE requests meanwhile.
  const index = await buildLayerIndexYielding(toc, { tocOffset: footer.tocOffset });
  return { size, footer, tocDigest, tocSize: tocJson.length, toc, index };
}

/**
 * Inflates the TOC member just far enough to read its first tar entry, which
 * must be `stargz.index.json`, and returns that entry's bytes. Stopping early
 * matters when a bad footer points into a large payload member.
 */
function extractTocJson(member: Buffer, tocOffset: number, maxTocBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Output in large pieces: each piece is a round trip through libuv's thread pool, and a 2 MB TOC
    // in the default 16 KiB pieces took ~120 of them (17 ms against 10 ms here, more on a busy loop).
    // Still streamed, so a footer that points into a large payload member stops after the first piece.
    const gunzip = createGunzip({ chunkSize: TOC_INFLATE_PIECE_BYTES });
    const parser = new TarParser();
    const parts: Buffer[] = [];
    let got = 0;
    let want = -1;
    let dataOffset = 0;
    let settled = false;
    const fail = (message: string, code: 'INVALID_TOC' | 'LIMIT' = 'INVALID_TOC'): void => {
      if (settled) return;
      settled = true;
      gunzip.destroy();
      reject(new EstargzError(code, `TOC member at blob offset ${tocOffset}: ${message}`, { blobOffset: tocOffset }));
    };
    const finish = (): void => {
      if (settled) return;
      settled = true;
      gunzip.destroy();
      const all = Buffer.concat(parts, got);
      resolve(Buffer.from(all.subarray(dataOffset, dataOffset + want)));
    };
    gunzip.on('data', (data: Buffer) => {
      if (settled) return;
      parts.push(data);
      got += data.length;
      if (want < 0) {
        let entries;
        try {
          entries = parser.push(data);
        } catch (err) {
          return fail(`not a tar stream: ${(err as Error).message}`);
        }
        const first = entries[0];
        if (!first) {
          if (parser.done) return fail(`the tar stream has no entries (expected ${TOC_TAR_NAME})`);
          if (got > 1 << 20) return fail('no tar header in the first MiB');
          return;
        }
        if (first.header.name !== TOC_TAR_NAME) {
          return fail(`first tar entry is ${JSON.stringify(first.header.name)}, expected ${TOC_TAR_NAME}`);
        }
        if (first.payloadSize > maxTocBytes) {
          return fail(`TOC JSON is ${first.payloadSize} bytes, over the limit of ${maxTocBytes}`, 'LIMIT');
        }
        want = first.payloadSize;
        dataOffset = first.dataOffset;
      }
      if (got >= dataOffset + want) finish();
    });
    gunzip.on('error', (err) => fail(`not a gzip member: ${err.message}`));
    gunzip.on('end', () => {
      if (want >= 0 && got >= dataOffset + want) return finish();
      fail(want < 0 ? `inflates to ${got} bytes without a complete tar header` : `TOC entry is truncated (${got - dataOffset} of ${want} bytes)`);
    });
    gunzip.end(member);
  });
}

