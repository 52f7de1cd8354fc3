/** OCI and Docker v2 schema 2 media types, and the descriptor shapes that carry them. */
export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

export const MANIFEST_ACCEPT = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerList].join(', ');

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs: { type: string; diff_ids: string[] };
  history?: unknown[];
  [key: string]: unknown;
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerList;
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType === MediaType.ociManifest || mediaType === MediaType.dockerManifest;
}

/** The platform this process runs on, in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const architecture = arch[process.arch] ?? process.arch;
  const armVersion = (process.config.variables as { arm_version?: string }).arm_version;
  return { os: 'linux', architecture, ...(architecture === 'arm' && armVersion && { variant: `v${armVersion}` }) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

export function parsePlatform(text: string): Platform {
  const [os, architecture, variant] = text.split('/');
  if (!os || !architecture) throw new Error(`platform ${JSON.stringify(text)} is not os/arch[/variant]`);
  return { os, architecture, ...(variant && { variant }) };
}

/** Whether an index entry's platform is the one wanted; arm64's "v8" variant is the default and may be left out. */
export function platformMatches(have: Platform | undefined, want: Platform): boolean {
  if (!have || have.os !== want.os || have.architecture !== want.architecture) return false;
  const norm = (v: string | undefined) => (want.architecture === 'arm64' && (v === 'v8' || v === undefined) ? '' : v ?? '');
  return !want.variant || norm(have.variant) === norm(want.variant);
}
