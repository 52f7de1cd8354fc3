import { createHash } from 'node:crypto';
import { fetchBlobBytes } from './blob.js';
import { statusError, type RegistryClient, type RepoRef } from './client.js';
import { RegistryError } from './errors.js';
import {
  MANIFEST_ACCEPT,
  formatPlatform,
  hostPlatform,
  isIndexType,
  isManifestType,
  platformMatches,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from './media-types.js';
import { formatReference, manifestReference, type ImageReference } from './reference.js';

/** Manifests and indexes are small; a larger answer is not a manifest. */
const MAX_MANIFEST_BYTES = 4 << 20;
const MAX_CONFIG_BYTES = 16 << 20;

export interface FetchedManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  doc: ImageManifest | ImageIndex;
}

function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/**
 * GETs a manifest or index by tag or digest. Content fetched by digest is
 * checked against that digest; by tag, against the Docker-Content-Digest the
 * registry states.
 */
export async function fetchManifest(client: RegistryClient, repo: RepoRef, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
  const what = `manifest ${repo.registry}/${repo.repository}:${reference}`;
  const fetched = await client.call(repo, { method: 'GET', path: `manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, operation: 'manifest', ...(signal && { signal }) }, async (res) => {
    if (res.statusCode !== 200) throw await statusError(res, `GET ${what}`);
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > MAX_MANIFEST_BYTES) {
      await res.body.dump();
      throw new RegistryError('PROTOCOL', `${what} is ${declared} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for manifests`);
    }
    const bytes = Buffer.from(await res.body.arrayBuffer());
    const digest = sha256(bytes);
    const stated = res.headers['docker-content-digest'];
    const expected = reference.includes(':') ? reference : typeof stated === 'string' && stated.startsWith('sha256:') ? stated : undefined;
    if (expected && expected !== digest) {
      throw new RegistryError('DIGEST_MISMATCH', `${what}: content hashes to ${digest}, expected ${expected}`);
    }
    let doc: ImageManifest | ImageIndex;
    try {
      doc = JSON.parse(bytes.toString('utf8')) as ImageManifest | ImageIndex;
    } catch {
      throw new RegistryError('PROTOCOL', `${what} is not JSON`);
    }
    const contentType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    const mediaType = doc.mediaType ?? contentType;
    if (!isIndexType(mediaType) && !isManifestType(mediaType)) {
      throw new RegistryError('UNSUPPORTED', `${what} has media type ${JSON.stringify(mediaType)}; OCI or Docker v2 schema 2 is needed`);
    }
    return { bytes, digest, mediaType, doc };
  });
  return fetched;
}

export interface ResolvedImage {
  ref: ImageReference;
  /** Digest of the platform manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Buffer;
  manifest: ImageManifest;
  config: ImageConfig;
  configBytes: Buffer;
  /** The index the manifest was chosen from, if the reference named one. */
  index?: FetchedManifest;
}

/** Picks the entry of an index for a platform. */
export function selectPlatform(index: ImageIndex, platform: Platform, what: string): Descriptor {
  const match = index.manifests.find((d) => isManifestType(d.mediaType) && platformMatches(d.platform, platform));
  if (!match) {
    const have = index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).join(', ');
    throw new RegistryError('NOT_FOUND', `${what} has no manifest for ${formatPlatform(platform)} (it has: ${have || 'none'})`);
  }
  return match;
}

/** Fetches and checks an image's config blob. */
export async function fetchConfig(client: RegistryClient, repo: RepoRef, manifest: ImageManifest, signal?: AbortSignal): Promise<{ config: ImageConfig; bytes: Buffer }> {
  // Configs count as the "manifest" operation in the traffic metrics, as manifests do.
  const bytes = await fetchBlobBytes(client, repo, manifest.config.digest, MAX_CONFIG_BYTES, signal, 'manifest');
  let config: ImageConfig;
  try {
    config = JSON.parse(bytes.toString('utf8')) as ImageConfig;
  } catch {
    throw new RegistryError('PROTOCOL', `config ${manifest.config.digest} of ${repo.registry}/${repo.repository} is not JSON`);
  }
  if (!Array.isArray(config.rootfs?.diff_ids)) {
    throw new RegistryError('PROTOCOL', `config ${manifest.config.digest} of ${repo.registry}/${repo.repository} has no rootfs.diff_ids`);
  }
  return { config, bytes };
}

/** A reference resolved to the platform's manifest (the config comes separately, so it can be fetched in parallel with other work). */
export type ResolvedManifest = Omit<ResolvedImage, 'config' | 'configBytes'>;

/** Resolves a reference to the platform's manifest (through an index if it names one). */
export async function resolveManifest(client: RegistryClient, ref: ImageReference, platform: Platform = hostPlatform(), signal?: AbortSignal): Promise<ResolvedManifest> {
  const repo = { registry: ref.registry, repository: ref.repository };
  const top = await fetchManifest(client, repo, manifestReference(ref), signal);
  let chosen = top;
  let index: FetchedManifest | undefined;
  if (isIndexType(top.mediaType)) {
    index = top;
    const desc = selectPlatform(top.doc as ImageIndex, platform, formatReference(ref));
    chosen = await fetchManifest(client, repo, desc.digest, signal);
    if (!isManifestType(chosen.mediaType)) throw new RegistryError('UNSUPPORTED', `${formatReference(ref)}: index entry ${desc.digest} is not an image manifest`);
  }
  const manifest = chosen.doc as ImageManifest;
  if (!manifest.config?.digest || !Array.isArray(manifest.layers)) {
    throw new RegistryError('PROTOCOL', `${formatReference(ref)}: manifest ${chosen.digest} has no config or layers`);
  }
  return { ref, manifestDigest: chosen.digest, manifestMediaType: chosen.mediaType, manifestBytes: chosen.bytes, manifest, ...(index && { index }) };
}

/** Resolves a reference to the platform's manifest and config. */
export async function resolveImage(client: RegistryClient, ref: ImageReference, platform: Platform = hostPlatform(), signal?: AbortSignal): Promise<ResolvedImage> {
  const m = await resolveManifest(client, ref, platform, signal);
  const { config, bytes } = await fetchConfig(client, { registry: ref.registry, repository: ref.repository }, m.manifest, signal);
  return { ...m, config, configBytes: bytes };
}

interface CachedImage {
  at: number;
  manifest: Promise<ResolvedManifest>;
  config: Promise<{ config: ImageConfig; bytes: Buffer }>;
  /** The manifest arrived (its promise resolved). */
  arrived: boolean;
}

/**
 * Resolved images kept for a while: a pull looks the same reference up once
 * per layer. The config is fetched as soon as the manifest is known, while
 * the caller goes on with the layer (one round trip less on a lookup).
 */
export class ImageResolver {
  private readonly cache = new Map<string, CachedImage>();
  constructor(private readonly client: RegistryClient, private readonly ttlMs = 120_000, private readonly platform: Platform = hostPlatform()) {}

  private entry(ref: ImageReference, signal?: AbortSignal): CachedImage {
    const key = formatReference(ref);
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit;
    const manifest = resolveManifest(this.client, ref, this.platform, signal);
    const config = manifest.then((m) => fetchConfig(this.client, { registry: ref.registry, repository: ref.repository }, m.manifest, signal));
    const entry: CachedImage = { at: Date.now(), manifest, config, arrived: false };
    manifest.then(() => { entry.arrived = true; }, () => {});
    config.catch(() => this.cache.get(key) === entry && this.cache.delete(key));
    this.cache.set(key, entry);
    return entry;
  }

  /** Whether the image's manifest is at hand (fetched and fresh): a lookup of it costs no request. */
  hasManifest(ref: ImageReference): boolean {
    const hit = this.cache.get(formatReference(ref));
    return hit !== undefined && hit.arrived && Date.now() - hit.at < this.ttlMs;
  }

  manifest(ref: ImageReference, signal?: AbortSignal): Promise<ResolvedManifest> {
    return this.entry(ref, signal).manifest;
  }

  config(ref: ImageReference, signal?: AbortSignal): Promise<{ config: ImageConfig; bytes: Buffer }> {
    return this.entry(ref, signal).config;
  }

  async resolve(ref: ImageReference, signal?: AbortSignal): Promise<ResolvedImage> {
    const e = this.entry(ref, signal);
    const [m, c] = await Promise.all([e.manifest, e.config]);
    return { ...m, config: c.config, configBytes: c.bytes };
  }

  forget(ref: ImageReference): void {
    this.cache.delete(formatReference(ref));
  }
}
