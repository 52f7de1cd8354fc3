import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RangedSource } from '../estargz/source.js';
import { statusError, type CallContext, type RegistryClient, type RepoRef } from './client.js';
import { RegistryError, safeUrl } from './errors.js';
import { RetryableError, type HttpResponse } from './transport.js';
import type { RangeSplitReason, RegistryOperation } from './traffic.js';
import { InFlight } from '../util/in-flight.js';
import type { BufferPool, PooledBuffer } from '../util/buffer-pool.js';

export interface ByteRange {
  offset: number;
  length: number;
}

/** A range as read: its bytes, and whether they are the caller's alone. */
export interface OwnedRange {
  data: Buffer;
  /**
   * The buffer is the whole of an ArrayBuffer no one else holds (not a part
   * of a multi-range answer, not handed to another caller that asked for the
   * same range): the caller may transfer it to a worker without a copy.
   */
  exclusive: boolean;
  /**
   * Present when the bytes are pooled memory (the client's bodyPool) that
   * this caller alone was handed: call it once nothing reads them any more
   * and no reference to them was kept; the memory then takes another
   * response's body. Not calling it is safe: the memory is then not reused.
   */
  release?: () => void;
}

/** Options of one read. */
export interface ReadOptions {
  signal?: AbortSignal;
  /** What the read is for, as the traffic hook reports its requests. */
  operation?: RegistryOperation;
}

/** A part of the blob the registry sent: bytes [start, start + data.length), in pooled memory when `lease` says so. */
interface Part {
  start: number;
  data: Buffer;
  lease?: PooledBuffer;
}

/** An asked range as fetched: its bytes, and the pooled body they are in (if any). */
interface FetchedRange {
  data: Buffer;
  lease: PooledBuffer | undefined;
}

/** How long a redirect target (a pre-signed object-storage URL) is reused before asking the registry again. */
const REDIRECT_TTL_MS = 5 * 60_000;
/** Gap below which scattered ranges are fetched as one range in single-range mode. */
const SUPER_RANGE_SLACK = 64 << 10;

export interface RemoteBlobOptions {
  /** Size from the manifest descriptor: trusted, so opening costs no request. */
  expectedSize?: number;
  /** Never send multi-range requests (config `force_single_range_mode`). */
  singleRangeOnly?: boolean;
  /** For finding the size only; each read takes its own signal. */
  signal?: AbortSignal;
}

/** A registry answer that misses asked bytes (a wrong Content-Range, a part left out) is asked again this many times. */
const MISSING_RANGE_RETRIES = 3;
/** …waiting this long before the first retry, doubling each time. */
const MISSING_RANGE_WAIT_MS = 100;

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

function sameOrigin(a: string, b: string): boolean {
  const x = new URL(a);
  const y = new URL(b);
  return x.protocol === y.protocol && x.host === y.host;
}

/**
 * Follows a registry's redirect (to object storage, typically): the same
 * headers (Range) go along; Authorization only when the target is the
 * registry's own origin. A second redirect is refused.
 */
async function followRedirect<T>(
  client: RegistryClient,
  res: HttpResponse,
  ctx: CallContext,
  headers: Record<string, string>,
  what: string,
  handle: (res: HttpResponse, target: string) => Promise<T>,
  signal?: AbortSignal,
  operation?: RegistryOperation,
): Promise<T> {
  const location = header(res, 'location');
  await res.body.dump();
  if (!location) throw new RegistryError('PROTOCOL', `${what}: redirect without a Location`);
  const target = new URL(location, ctx.url).toString();
  const auth = sameOrigin(target, ctx.url) ? ctx.authHeaders : {};
  const call = { method: 'GET' as const, url: target, headers: { ...headers, ...auth }, timeoutMs: ctx.endpoint.timeoutMs, traffic: client.traffic, ...(signal && { signal }), ...(operation && { operation }) };
  return client.transport.send(call, async (r) => {
    if (isRedirect(r.statusCode)) {
      await r.body.dump();
      throw new RegistryError('PROTOCOL', `${what}: redirected twice (${safeUrl(target)})`);
    }
    return handle(r, target);
  });
}

/** Formats ranges as an HTTP Range header value (inclusive ends). */
export function rangeHeader(ranges: readonly ByteRange[]): string {
  return 'bytes=' + ranges.map((r) => `${r.offset}-${r.offset + r.length - 1}`).join(',');
}

/** Parses `bytes a-b/total` (total may be `*`). */
function parseContentRange(value: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = value && /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Parses a multipart/byteranges body by lengths (each part's Content-Range
 * says how many bytes follow), so part data that happens to contain the
 * boundary string cannot cut it short.
 */
export function parseMultipart(body: Buffer, boundary: string): Part[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Part[] = [];
  let pos = body.indexOf(delimiter);
  while (pos >= 0) {
    pos += delimiter.length;
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break; // closing delimiter
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    if (headerEnd < 0) throw new RegistryError('PROTOCOL', 'multipart/byteranges part without a header end');
    const headers = body.toString('latin1', pos, headerEnd);
    const cr = /content-range:\s*([^\r\n]+)/i.exec(headers);
    const range = parseContentRange(cr?.[1]);
    if (!range || range.end < range.start) throw new RegistryError('PROTOCOL', 'multipart/byteranges part without a valid Content-Range');
    const dataStart = headerEnd + 4;
    const length = range.end - range.start + 1;
    if (dataStart + length > body.length) throw new RegistryError('PROTOCOL', 'multipart/byteranges part is truncated');
    parts.push({ start: range.start, data: body.subarray(dataStart, dataStart + length) });
    pos = body.indexOf(delimiter, dataStart + length);
  }
  return parts;
}

/**
 * A blob in a registry, read by byte ranges: the registry side of the
 * format library's RangedSource. Scattered ranges go out as one multi-range
 * request (falling back to single ranges for registries that refuse them),
 * redirects to object storage are followed and remembered, and identical
 * ranges in flight are fetched once.
 */
export class RemoteBlob implements RangedSource {
  private redirect: { url: string; until: number } | undefined;
  /** Ranges being fetched, keyed `offset+length`: a range asked for again meanwhile shares the request. */
  private readonly inflight = new InFlight<string, Buffer>();
  /** Bodies of ranged answers go into this pool's memory (a registry client test double may have none). */
  private readonly pool: BufferPool | undefined;

  private constructor(
    private readonly client: RegistryClient,
    readonly repo: RepoRef,
    readonly digest: string,
    readonly size: number,
    private readonly opts: RemoteBlobOptions,
  ) {
    this.pool = client.bodyPool as BufferPool | undefined;
  }

  /**
   * Opens a blob. With the size from its descriptor, no request is made (a
   * round trip saved on every layer lookup; a wrong size shows at the first
   * read as a range error or a bad footer). Without it, the size comes from
   * a HEAD, else a one-byte GET.
   */
  static async open(client: RegistryClient, repo: RepoRef, digest: string, opts: RemoteBlobOptions = {}): Promise<RemoteBlob> {
    const size = opts.expectedSize ?? await blobSize(client, repo, digest, opts.signal);
    return new RemoteBlob(client, repo, digest, size, opts);
  }

  get describe(): string {
    return `blob ${this.digest} of ${this.repo.registry}/${this.repo.repository}`;
  }

  async read(offset: number, length: number, signal?: AbortSignal, operation?: RegistryOperation): Promise<Buffer> {
    const [data] = await this.readRanges([{ offset, length }], signal, operation);
    return data!;
  }

  /** Reads several ranges, in as few requests as the registry allows. Results are in the order asked. */
  async readRanges(ranges: readonly ByteRange[], signal?: AbortSignal, operation?: RegistryOperation): Promise<Buffer[]> {
    return (await this.readOwned(ranges, { ...(signal && { signal }), ...(operation && { operation }) })).map((r) => r.data);
  }

  /**
   * readRanges, saying of each buffer whether it is the caller's alone (see
   * OwnedRange): the engine then hands it to a decode worker as it is
   * instead of copying it on the main thread, and lets pooled memory go
   * (`release`) once its decode tasks are done.
   */
  async readOwned(ranges: readonly ByteRange[], opts: ReadOptions = {}): Promise<OwnedRange[]> {
    for (const r of ranges) {
      if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length < 0 || r.offset + r.length > this.size) {
        throw new RangeError(`range [${r.offset}, ${r.offset + r.length}) is outside ${this.describe} (${this.size} bytes)`);
      }
    }
    const key = (r: ByteRange) => `${r.offset}+${r.length}`;
    const asked = new Map<string, number>();
    for (const r of ranges) asked.set(key(r), (asked.get(key(r)) ?? 0) + 1);
    // Each range: joined to a fetch in flight, or started here (then the caller may own its bytes).
    const mine = new Map<string, { ticket: { shared: boolean }; range: ByteRange; index: number }>();
    const pending = new Map<string, Promise<Buffer>>();
    for (const r of ranges) {
      const k = key(r);
      if (r.length === 0 || pending.has(k)) continue;
      const joined = this.inflight.join(k);
      if (joined) pending.set(k, joined);
      else mine.set(k, { ticket: { shared: false }, range: r, index: mine.size });
    }
    let fetched: Promise<{ ranges: FetchedRange[]; leases: Set<PooledBuffer> }> | undefined;
    if (mine.size > 0) {
      const unique = [...mine.values()].map((m) => m.range);
      fetched = this.fetchRanges(unique, opts);
      for (const [i, r] of unique.entries()) {
        const k = key(r);
        const ticket = this.inflight.track(k, fetched.then((f) => f.ranges[i]!.data));
        mine.get(k)!.ticket = ticket;
        pending.set(k, ticket.promise);
      }
    }
    const keys = [...pending.keys()];
    const datas = await Promise.all(keys.map((k) => pending.get(k)!));
    const got = new Map(keys.map((k, i) => [k, datas[i]!]));
    const own = fetched && (await fetched); // settled already (its ranges are among `datas`)
    try {
      return ranges.map((r) => {
        if (r.length === 0) return { data: Buffer.alloc(0), exclusive: true };
        const k = key(r);
        const data = got.get(k)!;
        const m = mine.get(k);
        // Read after the fetch settled: no one can join it any more.
        const alone = m !== undefined && !m.ticket.shared && asked.get(k) === 1;
        const exclusive = alone && data.byteOffset === 0 && data.buffer.byteLength === data.length && !(data.buffer instanceof SharedArrayBuffer);
        const lease = m && own!.ranges[m.index]!.lease;
        if (!lease) return { data, exclusive };
        // Pooled memory: a caller alone with it says when it is done; bytes that went to others too are never reused.
        if (alone) return { data, exclusive, release: lease.retain() };
        lease.escape();
        return { data, exclusive };
      });
    } finally {
      // This fetch's own hold on its bodies (a body none of the ranges is in goes back to the pool now).
      for (const lease of own?.leases ?? []) lease.release();
    }
  }

  private get singleRange(): boolean {
    return this.opts.singleRangeOnly === true || this.client.singleRangeHosts.has(this.repo.registry);
  }

  /** The asked ranges (in order) and every pooled body fetched for them, which the caller releases once it handed them out. */
  private async fetchRanges(ranges: ByteRange[], opts: ReadOptions): Promise<{ ranges: FetchedRange[]; leases: Set<PooledBuffer> }> {
    let parts: Part[] = [];
    try {
      const got = await this.fetchParts(ranges, opts, (p) => { parts = p; });
      return { ranges: ranges.map((r) => covering(got, r)!), leases: new Set(got.flatMap((p) => (p.lease ? [p.lease] : []))) };
    } catch (err) {
      // No one was handed these bodies: back to the pool.
      for (const lease of new Set(parts.flatMap((p) => (p.lease ? [p.lease] : [])))) lease.release();
      throw err;
    }
  }

  /** Parts covering every range (or a RegistryError); `progress` is told the parts gathered so far, so that a failure can let them go. */
  private async fetchParts(ranges: ByteRange[], opts: ReadOptions, progress: (parts: Part[]) => void): Promise<Part[]> {
    const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
    let parts: Part[];
    if (sorted.length === 1 || !this.singleRange) {
      parts = await this.get(sorted, opts);
    } else {
      parts = await this.getSingleRanges(sorted, opts, 'single_range_mode');
    }
    progress(parts);
    let missing = ranges.filter((r) => !covering(parts, r));
    if (missing.length > 0 && sorted.length > 1 && !this.singleRange) {
      // The registry answered only part of a multi-range request: single ranges for a while.
      this.client.singleRangeHosts.add(this.repo.registry);
      parts = parts.concat(await this.getSingleRanges(missing, opts, 'partial_answer'));
      progress(parts);
      missing = ranges.filter((r) => !covering(parts, r));
    }
    // A wrong Content-Range or a part left out is a fault of that answer, like a 5xx: asked again, with back-off.
    for (let retry = 0; missing.length > 0 && retry < MISSING_RANGE_RETRIES; retry++) {
      this.client.traffic.retry({ operation: opts.operation, reason: 'missing_range' });
      await sleep(MISSING_RANGE_WAIT_MS * 2 ** retry, undefined, opts.signal ? { signal: opts.signal } : {});
      parts = parts.concat(await this.getSingleRanges(missing, opts));
      progress(parts);
      missing = ranges.filter((r) => !covering(parts, r));
    }
    if (missing.length > 0) {
      throw new RegistryError('PROTOCOL', `${this.describe}: the registry did not return bytes [${missing[0]!.offset}, ${missing[0]!.offset + missing[0]!.length}) in ${MISSING_RANGE_RETRIES + 1} attempts`);
    }
    return parts;
  }

  /**
   * Single-range mode: nearby ranges as one range, the rest one request
   * each. `split` says why ranges meant for one request go as several (a
   * re-request of missing ranges is a retry, not a split, and says none).
   */
  private async getSingleRanges(sorted: ByteRange[], opts: ReadOptions, split?: RangeSplitReason): Promise<Part[]> {
    const groups: ByteRange[][] = [];
    for (const r of sorted) {
      const g = groups.at(-1);
      const last = g?.at(-1);
      if (g && last && r.offset <= last.offset + last.length + SUPER_RANGE_SLACK) g.push(r);
      else groups.push([r]);
    }
    const spans = groups.map((g) => {
      const start = g[0]!.offset;
      const end = Math.max(...g.map((r) => r.offset + r.length));
      return { offset: start, length: end - start };
    });
    if (split && spans.length > 1) this.client.traffic.rangeSplit({ operation: opts.operation, reason: split, ranges: sorted.length, requests: spans.length });
    const results = await Promise.all(spans.map((s) => this.get([s], opts)));
    return results.flat();
  }

  /** One GET with a Range header for `ranges`, via a remembered redirect when there is one. */
  private async get(ranges: ByteRange[], opts: ReadOptions): Promise<Part[]> {
    const { signal, operation } = opts;
    const headers = { range: rangeHeader(ranges), 'accept-encoding': 'identity' };
    const redirect = this.redirect;
    if (redirect && redirect.until > Date.now()) {
      const call = { method: 'GET' as const, url: redirect.url, headers, timeoutMs: 0, traffic: this.client.traffic, ...(signal && { signal }), ...(operation && { operation }) };
      const parts = await this.client.transport.send(call, async (res) => {
        if (res.statusCode === 401 || res.statusCode === 403 || res.statusCode === 404 || res.statusCode === 410) {
          await res.body.dump();
          return undefined; // expired signature: ask the registry again
        }
        return this.parseResponse(res, ranges, redirect.url);
      });
      if (parts) return parts;
      this.redirect = undefined;
    }
    const req = { method: 'GET' as const, path: `blobs/${this.digest}`, headers, ...(signal && { signal }), ...(operation && { operation }) };
    return this.client.call(this.repo, req, (res, ctx) => this.onRegistryResponse(res, ctx, ranges, headers, opts));
  }

  private async onRegistryResponse(res: HttpResponse, ctx: CallContext, ranges: ByteRange[], headers: Record<string, string>, opts: ReadOptions): Promise<Part[]> {
    if (isRedirect(res.statusCode)) {
      return followRedirect(this.client, res, ctx, headers, this.describe, (r, target) => {
        this.redirect = { url: target, until: Date.now() + REDIRECT_TTL_MS };
        return this.parseResponse(r, ranges, target);
      }, opts.signal, opts.operation);
    }
    if (res.statusCode === 400 && ranges.length > 1) {
      await res.body.dump();
      this.client.singleRangeHosts.add(this.repo.registry); // e.g. GCS rejects multi-range requests
      return this.getSingleRanges(ranges, opts, 'refused');
    }
    return this.parseResponse(res, ranges, ctx.url);
  }

  private async parseResponse(res: HttpResponse, ranges: ByteRange[], url: string): Promise<Part[]> {
    const what = `GET ${this.describe} (${safeUrl(url)})`;
    if (res.statusCode === 200) {
      // The Range header was ignored: keep only the asked ranges while the whole blob streams by.
      // S3 (behind ECR and others) does this for multi-range requests only: single ranges from now on.
      if (ranges.length > 1) this.client.singleRangeHosts.add(this.repo.registry);
      return keepRanges(res, ranges, this.size, what);
    }
    if (res.statusCode !== 206) throw await statusError(res, what);
    const type = header(res, 'content-type') ?? '';
    const expected = ranges.reduce((n, r) => n + r.length, 0);
    const { body, lease } = await readBody(res, expected + 64 * 1024 + ranges.length * 256, what, this.pool);
    try {
      const boundary = /^multipart\/byteranges;.*boundary="?([^";]+)"?/i.exec(type)?.[1];
      if (boundary) return parseMultipart(body, boundary).map((p) => ({ ...p, ...(lease && { lease }) }));
      const range = parseContentRange(header(res, 'content-range'));
      if (!range) throw new RegistryError('PROTOCOL', `${what}: 206 without a Content-Range`);
      if (range.total !== undefined && range.total !== this.size) {
        throw new RegistryError('PROTOCOL', `${what}: the registry says the blob is ${range.total} bytes, not ${this.size}`);
      }
      if (body.length !== range.end - range.start + 1) {
        throw new RetryableError(`${what}: body of ${body.length} bytes for Content-Range ${range.start}-${range.end}`);
      }
      return [{ start: range.start, data: body, ...(lease && { lease }) }];
    } catch (err) {
      lease?.release(); // refused: no one saw these bytes
      throw err;
    }
  }
}

function covering(parts: Part[], r: ByteRange): FetchedRange | undefined {
  for (const p of parts) {
    if (p.start <= r.offset && r.offset + r.length <= p.start + p.data.length) {
      return { data: p.data.subarray(r.offset - p.start, r.offset - p.start + r.length), lease: p.lease };
    }
  }
  return undefined;
}

/**
 * Bytes a body reader handles before it gives the event loop a turn.
 * Iterated with `for await`, a body that undici has already buffered comes
 * out as one chunk (the stream concatenates what it holds) in microtasks
 * with no turn in between: copying a 32 MiB answer that way was one
 * main-thread stretch of 100-280 ms on a loaded machine, with every FUSE
 * request waiting behind it.
 */
const TURN_BYTES = 1 << 20;

/**
 * Hands each chunk of a body to `take` as the stream emits it (flowing mode:
 * chunks as they arrived, never concatenated), pausing for a turn of the
 * event loop after every TURN_BYTES. `take` may throw to stop: the body is
 * destroyed and the promise rejects with that error.
 */
function eachChunk(body: HttpResponse['body'], take: (chunk: Buffer) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let sinceTurn = 0;
    let failed = false;
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      body.destroy();
      reject(err);
    };
    body.on('data', (c: Buffer) => {
      if (failed) return;
      try {
        take(c);
      } catch (err) {
        fail(err);
        return;
      }
      if ((sinceTurn += c.length) >= TURN_BYTES) {
        sinceTurn = 0;
        body.pause();
        setImmediate(() => body.resume());
      }
    });
    body.once('end', () => { if (!failed) resolve(); });
    body.once('error', (err) => fail(err));
    // Closed without an end (aborted, reset): the error event says why when there is one.
    body.once('close', () => { if (!body.readableEnded) fail(new Error('body closed before its end')); });
  });
}

/**
 * Reads a body, refusing one larger than `limit`; a body cut short is
 * retryable. With a Content-Length, the body is copied piece by piece into
 * one buffer allocated up front: concatenating a 32 MiB response at the end
 * was one main-thread task of up to ~200 ms under load (every FUSE reply
 * waited behind it). That buffer is a SharedArrayBuffer: the engine hands
 * its parts (a multi-range answer's, a span's decode tasks) to worker
 * threads as they are, where an ArrayBuffer would have to be copied for
 * each task on the main thread (only a whole ArrayBuffer can be transferred).
 * With a `pool`, it is pooled memory (`lease`, which the caller releases):
 * every byte of it is written here before anyone reads it (a body shorter
 * than its Content-Length is refused).
 */
async function readBody(res: HttpResponse, limit: number, what: string, pool?: BufferPool): Promise<{ body: Buffer; lease?: PooledBuffer }> {
  const declared = Number(header(res, 'content-length'));
  const sized = Number.isSafeInteger(declared) && declared >= 0 && declared <= limit;
  // Shared memory: the decode workers read their parts of it where it is, with no copy on the main thread.
  const lease = sized ? pool?.acquire(declared) : undefined;
  const out = lease ? lease.bytes : sized ? Buffer.from(new SharedArrayBuffer(declared)) : undefined;
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    await eachChunk(res.body, (chunk) => {
      if (total + chunk.length > (out ? out.length : limit)) {
        throw new RegistryError('PROTOCOL', out
          ? `${what}: response is longer than its Content-Length of ${out.length} bytes`
          : `${what}: response is larger than the ${limit} bytes asked for`);
      }
      if (out) chunk.copy(out, total);
      else chunks.push(chunk);
      total += chunk.length;
    });
  } catch (err) {
    lease?.release();
    if (err instanceof RegistryError) throw err;
    throw new RetryableError(`${what}: body interrupted: ${(err as Error).message}`);
  }
  if (!out) return { body: Buffer.concat(chunks, total) };
  if (total !== out.length) {
    lease?.release();
    throw new RetryableError(`${what}: body of ${total} bytes, Content-Length ${out.length}`);
  }
  return { body: out, ...(lease && { lease }) };
}

async function keepRanges(res: HttpResponse, ranges: ByteRange[], size: number, what: string): Promise<Part[]> {
  const out = ranges.map((r) => ({ start: r.offset, data: Buffer.alloc(r.length), got: 0 }));
  let pos = 0;
  try {
    await eachChunk(res.body, (chunk) => {
      for (const o of out) {
        const from = Math.max(o.start, pos);
        const to = Math.min(o.start + o.data.length, pos + chunk.length);
        if (from < to) {
          chunk.copy(o.data, from - o.start, from - pos, to - pos);
          o.got += to - from;
        }
      }
      pos += chunk.length;
    });
  } catch (err) {
    throw new RetryableError(`${what}: body interrupted: ${(err as Error).message}`);
  }
  if (pos !== size) throw new RetryableError(`${what}: full body of ${pos} bytes, expected ${size}`);
  return out.map(({ start, data }) => ({ start, data }));
}

/** The blob's size: HEAD, falling back to a one-byte ranged GET for registries that do not answer HEAD. */
export async function blobSize(client: RegistryClient, repo: RepoRef, digest: string, signal?: AbortSignal): Promise<number> {
  const what = `blob ${digest} of ${repo.registry}/${repo.repository}`;
  const head = await client.call(repo, { method: 'HEAD', path: `blobs/${digest}`, ...(signal && { signal }) }, async (res) => {
    await res.body.dump();
    if (res.statusCode === 404) throw new RegistryError('NOT_FOUND', `HEAD ${what}: 404 (not in the registry)`, 404);
    const length = Number(header(res, 'content-length'));
    return res.statusCode === 200 && Number.isSafeInteger(length) && length >= 0 ? length : undefined;
  });
  if (head !== undefined) return head;
  const headers = { range: 'bytes=0-0' };
  return client.call(repo, { method: 'GET', path: `blobs/${digest}`, headers, ...(signal && { signal }) }, async (res, ctx) =>
    (isRedirect(res.statusCode) ? followRedirect(client, res, ctx, headers, what, sizeFrom, signal) : sizeFrom(res)));

  async function sizeFrom(res: HttpResponse): Promise<number> {
    await res.body.dump();
    if (res.statusCode === 206) {
      const total = parseContentRange(header(res, 'content-range'))?.total;
      if (total !== undefined) return total;
    }
    if (res.statusCode === 200) {
      const length = Number(header(res, 'content-length'));
      if (Number.isSafeInteger(length)) return length;
    }
    throw new RegistryError(res.statusCode === 404 ? 'NOT_FOUND' : 'PROTOCOL', `cannot find the size of ${what} (${res.statusCode})`, res.statusCode);
  }
}

/**
 * The last `length` bytes of a blob whose size is not known yet, and the
 * blob's size: one GET with a suffix range (`bytes=-N`), which lets a layer's
 * footer be read while its manifest is still on the way. Answers undefined,
 * without reading the body, when the registry (or the storage it redirects
 * to) does not answer the suffix range with a 206 that ends at the blob's end.
 * What it returns is unverified like any range: the caller checks it (the
 * size against the manifest's descriptor, the TOC against its digest).
 */
export async function readBlobTail(client: RegistryClient, repo: RepoRef, digest: string, length: number, signal?: AbortSignal, operation?: RegistryOperation): Promise<{ size: number; tail: Buffer } | undefined> {
  const what = `blob ${digest} of ${repo.registry}/${repo.repository}`;
  const headers = { range: `bytes=-${length}`, 'accept-encoding': 'identity' };
  const parse = async (res: HttpResponse, url: string): Promise<{ size: number; tail: Buffer } | undefined> => {
    if (res.statusCode !== 206) {
      if (res.statusCode === 200) {
        // The range was ignored: the whole blob would follow. Not read: the caller reads the tail by offset.
        res.body.destroy();
        return undefined;
      }
      throw await statusError(res, `GET ${what} (${safeUrl(url)})`);
    }
    const range = parseContentRange(header(res, 'content-range'));
    if (!range || range.total === undefined || range.end !== range.total - 1 || range.end - range.start + 1 > length) {
      res.body.destroy();
      return undefined;
    }
    const { body } = await readBody(res, length, `GET ${what}`);
    if (body.length !== range.end - range.start + 1) return undefined;
    return { size: range.total, tail: body };
  };
  // Sent beside the manifest request, which fetches whatever token is needed: a 401 here is final.
  return client.call(repo, { method: 'GET', path: `blobs/${digest}`, headers, noAuthRetry: true, ...(signal && { signal }), ...(operation && { operation }) }, async (res, ctx) =>
    (isRedirect(res.statusCode) ? followRedirect(client, res, ctx, headers, what, parse, signal, operation) : parse(res, ctx.url)));
}

/** GETs a whole small blob (a config) and checks its digest. */
export async function fetchBlobBytes(client: RegistryClient, repo: RepoRef, digest: string, maxBytes: number, signal?: AbortSignal, operation?: RegistryOperation): Promise<Buffer> {
  const what = `blob ${digest} of ${repo.registry}/${repo.repository}`;
  const whole = async (r: HttpResponse, url: string): Promise<Buffer> => {
    if (r.statusCode !== 200) throw await statusError(r, `GET ${what} (${safeUrl(url)})`);
    return (await readBody(r, maxBytes, `GET ${what}`)).body;
  };
  const bytes = await client.call(repo, { method: 'GET', path: `blobs/${digest}`, ...(signal && { signal }), ...(operation && { operation }) }, async (res, ctx) =>
    (isRedirect(res.statusCode) ? followRedirect(client, res, ctx, {}, what, whole, signal, operation) : whole(res, ctx.url)));
  const actual = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
  if (digest.startsWith('sha256:') && actual !== digest) {
    throw new RegistryError('DIGEST_MISMATCH', `${what}: content hashes to ${actual}`);
  }
  return bytes;
}

/**
 * Downloads a whole blob to a file, resuming with a Range request where a
 * transfer broke, and checks its digest. Used to convert layers without
 * holding them in memory.
 */
export async function downloadBlob(client: RegistryClient, repo: RepoRef, digest: string, path: string, signal?: AbortSignal): Promise<number> {
  const { open } = await import('node:fs/promises');
  const what = `blob ${digest} of ${repo.registry}/${repo.repository}`;
  const file = await open(path, 'w');
  let hash = createHash('sha256');
  let got = 0;
  try {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'accept-encoding': 'identity', ...(got > 0 && { range: `bytes=${got}-` }) };
      const before = got;
      try {
        await client.call(repo, { method: 'GET', path: `blobs/${digest}`, headers, ...(signal && { signal }) }, async (res, ctx) =>
          (isRedirect(res.statusCode) ? followRedirect(client, res, ctx, headers, what, sink, signal) : sink(res)));
        break;
      } catch (err) {
        // Resume where the transfer broke, as long as each try makes progress.
        if (got === before || attempt >= 20 || !(err instanceof RegistryError && err.cause instanceof BodyInterrupted)) throw err;
      }
    }
  } finally {
    await file.close();
  }
  const actual = 'sha256:' + hash.digest('hex');
  if (digest.startsWith('sha256:') && actual !== digest) throw new RegistryError('DIGEST_MISMATCH', `${what}: content hashes to ${actual}`);
  return got;

  async function sink(res: HttpResponse): Promise<void> {
    if (res.statusCode !== 200 && res.statusCode !== 206) throw await statusError(res, `GET ${what}`);
    if (res.statusCode === 200 && got > 0) {
      // The resume Range was ignored: the whole blob comes again.
      got = 0;
      hash = createHash('sha256');
    }
    try {
      for await (const c of res.body) {
        const chunk = c as Buffer;
        await file.write(chunk, 0, chunk.length, got);
        hash.update(chunk);
        got += chunk.length;
      }
    } catch (err) {
      // Not a RetryableError: the transport would resend the same Range; the loop above resumes instead.
      throw new BodyInterrupted(`${what}: body interrupted at ${got}: ${(err as Error).message}`);
    }
  }
}

class BodyInterrupted extends Error {}
