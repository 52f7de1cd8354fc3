import { open } from 'node:fs/promises';
import { statusError, type RegistryClient, type RepoRef } from './client.js';
import { RegistryError } from './errors.js';

/** Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size. */
export const MONOLITHIC_LIMIT = 32 << 20;

/** A blob to upload: in memory, or in a file (`prepare` makes the file, called only if an upload is needed). */
export type BlobContent = { bytes: Buffer } | { path: string; size: number; prepare?: () => Promise<void> };

export interface PushBlobResult {
  /** How the blob got there: already present, mounted from another repository, or uploaded. */
  how: 'exists' | 'mounted' | 'uploaded';
}

function contentSize(c: BlobContent): number {
  return 'bytes' in c ? c.bytes.length : c.size;
}

async function readSlice(c: BlobContent, offset: number, length: number): Promise<Buffer> {
  if ('bytes' in c) return c.bytes.subarray(offset, offset + length);
  const fh = await open(c.path, 'r');
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) throw new Error(`${c.path}: ends at ${offset + got}, expected ${offset + length} bytes`);
      got += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Resolves an upload Location (which may be relative) against the URL that returned it. */
function uploadUrl(location: string | string[] | undefined, base: string, what: string): string {
  const loc = Array.isArray(location) ? location[0] : location;
  if (!loc) throw new RegistryError('PROTOCOL', `${what}: upload response without a Location`);
  return new URL(loc, base).toString();
}

function withDigest(url: string, digest: string): string {
  const u = new URL(url);
  u.searchParams.set('digest', digest);
  return u.toString();
}

/**
 * Pushes a blob unless the repository has it: HEAD, then a cross-repository
 * mount from `mountFrom` (same registry) when given, else an upload session:
 * one PUT for small blobs, PATCH chunks then PUT for large ones.
 */
export interface PushBlobOptions {
  /** Repository on the same registry to mount the blob from instead of uploading it. */
  mountFrom?: string;
  /** Blobs above this size are uploaded in PATCH chunks of this size. */
  chunkSize?: number;
  signal?: AbortSignal;
}

export async function pushBlob(client: RegistryClient, repo: RepoRef, digest: string, content: BlobContent, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
  const { mountFrom, signal } = opts;
  const chunkSize = opts.chunkSize ?? MONOLITHIC_LIMIT;
  const what = `blob ${digest} to ${repo.registry}/${repo.repository}`;
  const sig = signal ? { signal } : {};
  const exists = await client.call(repo, { method: 'HEAD', path: `blobs/${digest}`, push: true, ...sig }, async (res) => {
    await res.body.dump();
    return res.statusCode === 200;
  });
  if (exists) return { how: 'exists' };

  const mountQuery = mountFrom && mountFrom !== repo.repository ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mountFrom)}` : '';
  const start = await client.call(repo, {
    method: 'POST',
    path: `blobs/uploads/${mountQuery}`,
    headers: { 'content-length': '0' },
    push: true,
    ...(mountQuery && { extraScopes: [`repository:${mountFrom}:pull`] }),
    ...sig,
  }, async (res, ctx) => {
    if (res.statusCode !== 202 && !(res.statusCode === 201 && mountQuery)) throw await statusError(res, `POST ${what} (start upload)`);
    await res.body.dump();
    if (res.statusCode === 201) return { mounted: true as const };
    return { mounted: false as const, url: uploadUrl(res.headers.location, ctx.url, what), auth: ctx.authHeaders, timeoutMs: ctx.endpoint.timeoutMs };
  });
  if (start.mounted) return { how: 'mounted' };

  if ('path' in content) await content.prepare?.();
  const size = contentSize(content);
  let url = start.url;
  const send = (method: 'PUT' | 'PATCH', target: string, body: Buffer, extra: Record<string, string>) =>
    client.transport.send({
      method,
      url: target,
      headers: { 'user-agent': 'estargz-store', 'content-type': 'application/octet-stream', 'content-length': String(body.length), ...start.auth, ...extra },
      body,
      timeoutMs: start.timeoutMs,
      ...sig,
    }, async (res) => {
      const ok = method === 'PATCH' ? res.statusCode === 202 : res.statusCode === 201;
      if (!ok) throw await statusError(res, `${method} ${what}`);
      await res.body.dump();
      return method === 'PATCH' ? uploadUrl(res.headers.location, target, what) : target;
    });

  if (size <= chunkSize) {
    await send('PUT', withDigest(url, digest), await readSlice(content, 0, size), {});
    return { how: 'uploaded' };
  }
  for (let offset = 0; offset < size; offset += chunkSize) {
    const length = Math.min(chunkSize, size - offset);
    url = await send('PATCH', url, await readSlice(content, offset, length), { 'content-range': `${offset}-${offset + length - 1}` });
  }
  await send('PUT', withDigest(url, digest), Buffer.alloc(0), {});
  return { how: 'uploaded' };
}

/** PUTs a manifest or index under a tag or digest. */
export async function pushManifest(client: RegistryClient, repo: RepoRef, reference: string, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<void> {
  await client.call(repo, {
    method: 'PUT',
    path: `manifests/${reference}`,
    headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
    body: bytes,
    push: true,
    ...(signal && { signal }),
  }, async (res) => {
    if (res.statusCode !== 201 && res.statusCode !== 200) throw await statusError(res, `PUT manifest ${repo.registry}/${repo.repository}:${reference}`);
    await res.body.dump();
  });
}

