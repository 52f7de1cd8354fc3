import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The podman-written zstd:chunked layer (test/fixtures/zstd-chunked/README.md). */
export const FIXTURE_DIR = new URL('../../../test/fixtures/zstd-chunked/', import.meta.url);
const BLOBS = new URL('tiny-oci/blobs/sha256/', FIXTURE_DIR);
const MANIFEST_DIGEST = '149f2907ca72fbe27b3c7d58fdd900962a59df1b35632b7134193c934d00463f';

export interface ZstdFixture {
  blob: Buffer;
  blobPath: string;
  blobDigest: string;
  annotations: Record<string, string>;
  diffID: string;
}

export async function loadZstdFixture(): Promise<ZstdFixture> {
  const manifest = JSON.parse(await readFile(new URL(MANIFEST_DIGEST, BLOBS), 'utf8')) as {
    config: { digest: string };
    layers: { digest: string; annotations: Record<string, string> }[];
  };
  const layer = manifest.layers[0]!;
  const config = JSON.parse(await readFile(new URL(manifest.config.digest.slice('sha256:'.length), BLOBS), 'utf8')) as { rootfs: { diff_ids: string[] } };
  const blobUrl = new URL(layer.digest.slice('sha256:'.length), BLOBS);
  return {
    blob: await readFile(blobUrl),
    blobPath: fileURLToPath(blobUrl),
    blobDigest: layer.digest,
    annotations: layer.annotations,
    diffID: config.rootfs.diff_ids[0]!,
  };
}

/** The layer's tar as the zstd command decodes it: the independent reference. */
export async function zstdCliDecode(path: string): Promise<Buffer> {
  const { stdout } = await promisify(execFile)('zstd', ['-dc', path], { encoding: 'buffer', maxBuffer: 64 << 20 });
  return stdout;
}

/** `tar -tv --numeric-owner` lines of the fixture: mode string, owner, size, name (and link target). */
export interface TvLine {
  mode: string;
  size: number;
  name: string;
  link?: string;
}

export async function loadTarTv(): Promise<TvLine[]> {
  const text = await readFile(new URL('tiny-layer.tar-tv.txt', FIXTURE_DIR), 'utf8');
  return text.trim().split('\n').map((line) => {
    const m = /^(\S+) (\d+)\/(\d+)\s+(\d+) \S+ \S+ (.*)$/.exec(line);
    if (!m) throw new Error(`unparsed tar -tv line ${JSON.stringify(line)}`);
    const [name, link] = m[5]!.split(' -> ');
    return { mode: m[1]!, size: Number(m[4]), name: name!, ...(link === undefined ? {} : { link }) };
  });
}
