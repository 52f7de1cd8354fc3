// An HTTP reverse proxy in front of a registry that injects faults, so tests can
// drive a registry client's error paths against a real registry.
//
// Two listeners:
//   main  (`url`/`host`) — the registry as the client sees it; everything is
//         passed through unless a fault rule matches.
//   other (`otherUrl`/`otherHost`) — a second port standing in for object
//         storage (S3/CDN). `redirect` faults send clients there, to
//         `/_blob/<registry path>?sig=…` ("pre-signed URLs"). The proxy
//         remembers the redirected request's Authorization with the signature
//         and uses it upstream, so the client must NOT send Authorization to
//         the other host: if it does, the answer is 403 (and the log entry has
//         `authorization: true`). Same-host redirects (`to: 'same'`) use the
//         same /_blob route on the main listener and tolerate Authorization.
//
// Every request on either listener is appended to `requests` when it arrives
// (status 0 until the response head is sent; `bytes` grows as body bytes go
// out; `complete` turns true when the response finished normally).

import { randomBytes } from 'node:crypto';
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { prng } from './prng.js';
import { closeServer, listen } from './token-server.js';

export type ListenerName = 'main' | 'other';

/** What a rule's matcher sees. For /_blob requests `path` is the original registry path. */
export interface RequestInfo {
  method: string;
  path: string;
  /** Full request target as received (with query string). */
  url: string;
  headers: IncomingHttpHeaders;
  listener: ListenerName;
  /** True for requests to a redirect target (/_blob/… signed URL). */
  signed: boolean;
}

/** RegExp: tested against the path; string: the path contains it; function: any predicate. */
export type PathMatcher = RegExp | string | ((req: RequestInfo) => boolean);

export type FaultAction =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string | Uint8Array }
  | { kind: 'reset-mid-body'; afterBytes: number }
  | { kind: 'delay'; ms: number }
  | { kind: 'slow-body'; bytesPerSecond: number }
  | { kind: 'redirect'; status?: 301 | 302 | 303 | 307 | 308; to?: 'same' | 'other-host' }
  | { kind: 'no-multirange' }
  | { kind: 'ignore-range' }
  | { kind: 'partial-multirange' }
  | { kind: 'expire-redirect' }
  /** Flips `count` bytes (default 1) of the body at random places: the headers still say all is well. */
  | { kind: 'flip-bytes'; count?: number }
  /** A 206 whose Content-Range names other bytes than the body holds (shifted by `by`, default 1). */
  | { kind: 'wrong-content-range'; by?: number }
  /** The body holds the bytes `by` (default 1) further on than asked, with the asked Content-Range. */
  | { kind: 'shift-body'; by?: number };

export type FaultKind = FaultAction['kind'];

export interface FaultMatch {
  /** Method(s) the rule applies to (default: any). */
  method?: string | string[];
  /** Default: any path. */
  path?: PathMatcher;
  /** How many requests the rule affects (default 1; Infinity allowed). */
  times?: number;
  /** Applies to a matching request with this probability (default 1), drawn from the proxy's seeded generator. */
  probability?: number;
  /**
   * Which requests the rule sees: plain registry requests, signed-URL (/_blob)
   * requests, or both. Default 'registry', except 'expire-redirect' which only
   * ever applies to signed URLs.
   */
  on?: 'registry' | 'signed-url' | 'any';
}

export type FaultRule = FaultMatch & FaultAction;

/** Returned by addFault so tests can assert the fault actually fired. */
export interface FaultHandle {
  readonly rule: FaultRule;
  /** Requests the rule has affected so far. */
  hits: number;
  /** Requests it will still affect. */
  remaining: number;
}

export interface ProxyRequestRecord {
  method: string;
  /** Path without query; for signed URLs the original registry path (no /_blob prefix). */
  path: string;
  /** Request target as received, with query string. */
  url: string;
  range?: string;
  /** 0 until the response head has been sent. */
  status: number;
  /** Response body bytes sent to the client. */
  bytes: number;
  listener: ListenerName;
  /** Request to a redirect target (/_blob/… signed URL). */
  signed: boolean;
  /** Whether the client sent an Authorization header. */
  authorization: boolean;
  /** The fault applied to this request, if any. */
  fault?: FaultKind;
  /** True once the response was completely sent (false for resets and client aborts). */
  complete: boolean;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT — point the client here instead of the registry. */
  url: string;
  host: string;
  /** The second listener ("object storage" host) that cross-host redirects point to. */
  otherUrl: string;
  otherHost: string;
  requests: ProxyRequestRecord[];
  /** Clears `requests` in place. */
  reset(): void;
  addFault(rule: FaultRule): FaultHandle;
  clearFaults(): void;
  stop(): Promise<void>;
}

interface SignedUrl {
  /** Registry path + query the signed URL stands for. */
  target: string;
  /** Authorization of the request that was redirected; used upstream on the client's behalf. */
  authorization?: string;
  listener: ListenerName;
  uses: number;
}

interface ProxyState {
  upstream: URL;
  agent: Agent;
  mainOrigin: string;
  otherOrigin: string;
  rules: FaultHandle[];
  requests: ProxyRequestRecord[];
  signed: Map<string, SignedUrl>;
  /** Seeded, so a run with faults can be repeated. */
  random: () => number;
}

/** Per-request body handling once the upstream response is forwarded. */
type BodyMode =
  | { kind: 'pipe' }
  | { kind: 'reset'; afterBytes: number }
  | { kind: 'slow'; bytesPerSecond: number }
  | { kind: 'flip'; count: number; random: () => number };


const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection',
  'te', 'trailer', 'transfer-encoding', 'upgrade',
]);

/** Headers an object store would plausibly send back for a signed-URL GET. */
const SIGNED_RESPONSE_HEADERS = [
  'content-type', 'content-length', 'content-range', 'accept-ranges', 'etag', 'last-modified', 'cache-control',
];

const BLOB_PREFIX = '/_blob';

export async function startFaultProxy(upstream: string, opts: { seed?: number } = {}): Promise<FaultProxy> {
  const agent = new Agent({ keepAlive: true });
  const state: ProxyState = {
    upstream: new URL(upstream),
    agent,
    mainOrigin: '',
    otherOrigin: '',
    rules: [],
    requests: [],
    signed: new Map(),
    random: prng(opts.seed ?? 1), // seeded, so that fault runs repeat
  };
  const main = createServer((req, res) => dispatch(state, 'main', req, res));
  const other = createServer((req, res) => dispatch(state, 'other', req, res));
  const mainPort = await listen(main);
  const otherPort = await listen(other);
  state.mainOrigin = `http://127.0.0.1:${mainPort}`;
  state.otherOrigin = `http://127.0.0.1:${otherPort}`;
  return {
    url: state.mainOrigin,
    host: `127.0.0.1:${mainPort}`,
    otherUrl: state.otherOrigin,
    otherHost: `127.0.0.1:${otherPort}`,
    requests: state.requests,
    reset: () => void (state.requests.length = 0),
    addFault: (rule) => addRule(state, rule),
    clearFaults: () => void (state.rules.length = 0),
    async stop() {
      await Promise.all([closeServer(main), closeServer(other)]);
      agent.destroy();
    },
  };
}

function addRule(state: ProxyState, rule: FaultRule): FaultHandle {
  const times = rule.times ?? 1;
  if (!(times > 0)) throw new Error(`fault rule needs times > 0, got ${times}`);
  const handle: FaultHandle = { rule, hits: 0, remaining: times };
  state.rules.push(handle);
  return handle;
}

function dispatch(state: ProxyState, listener: ListenerName, req: IncomingMessage, res: ServerResponse): void {
  const run = async (): Promise<void> => {
    const target = new URL(req.url ?? '/', 'http://proxy.invalid');
    const signed = target.pathname.startsWith(`${BLOB_PREFIX}/`);
    const path = signed ? target.pathname.slice(BLOB_PREFIX.length) : target.pathname;
    const entry = logRequest(state, req, listener, path, signed);
    if (signed) return serveSigned(state, req, res, entry, target);
    // The "object storage" host serves nothing but signed URLs.
    if (listener === 'other') return sendStatus(res, entry, 404, { 'content-type': 'text/plain' }, 'NoSuchKey\n');
    return serveRegistry(state, req, res, entry);
  };
  run().catch((err: unknown) => failResponse(res, err));
}

function logRequest(state: ProxyState, req: IncomingMessage, listener: ListenerName, path: string, signed: boolean): ProxyRequestRecord {
  const entry: ProxyRequestRecord = {
    method: req.method ?? 'GET',
    path,
    url: req.url ?? '/',
    status: 0,
    bytes: 0,
    listener,
    signed,
    authorization: req.headers.authorization !== undefined,
    complete: false,
  };
  if (req.headers.range !== undefined) entry.range = req.headers.range;
  state.requests.push(entry);
  return entry;
}

// ------------------------------------------------------------------ rule matching

function requestInfo(req: IncomingMessage, entry: ProxyRequestRecord): RequestInfo {
  return { method: entry.method, path: entry.path, url: entry.url, headers: req.headers, listener: entry.listener, signed: entry.signed };
}

function matches(rule: FaultRule, info: RequestInfo): boolean {
  const on = rule.kind === 'expire-redirect' ? 'signed-url' : rule.on ?? 'registry';
  if (on === 'registry' && info.signed) return false;
  if (on === 'signed-url' && !info.signed) return false;
  if (rule.method !== undefined) {
    const methods = Array.isArray(rule.method) ? rule.method : [rule.method];
    if (!methods.some((m) => m.toUpperCase() === info.method)) return false;
  }
  const p = rule.path;
  if (p === undefined) return true;
  if (typeof p === 'string') return info.path.includes(p);
  if (p instanceof RegExp) return p.test(info.path);
  return p(info);
}

/** Preconditions a kind needs beyond the matcher (a range fault needs a Range header, …). */
function applicable(kind: FaultKind, info: RequestInfo, signedUrl?: SignedUrl): boolean {
  const range = info.headers.range;
  switch (kind) {
    case 'no-multirange':
    case 'partial-multirange':
      return range !== undefined && range.includes(',');
    case 'ignore-range':
      return range !== undefined;
    case 'wrong-content-range':
    case 'shift-body':
      return range !== undefined && !range.includes(',');
    case 'redirect':
      return !info.signed;
    case 'expire-redirect':
      return signedUrl !== undefined && signedUrl.uses > 0;
    default:
      return true;
  }
}

function findRule(state: ProxyState, info: RequestInfo, signedUrl?: SignedUrl): FaultHandle | undefined {
  return state.rules.find((h) => h.remaining > 0 && matches(h.rule, info) && applicable(h.rule.kind, info, signedUrl)
    && (h.rule.probability === undefined || state.random() < h.rule.probability));
}

function consume(handle: FaultHandle, entry: ProxyRequestRecord): void {
  handle.remaining -= 1;
  handle.hits += 1;
  entry.fault = handle.rule.kind;
}

// ------------------------------------------------------------------ main listener

async function serveRegistry(state: ProxyState, req: IncomingMessage, res: ServerResponse, entry: ProxyRequestRecord): Promise<void> {
  const info = requestInfo(req, entry);
  const handle = findRule(state, info);
  const headers = forwardHeaders(req.headers, state.upstream.host);
  let body: BodyMode = { kind: 'pipe' };
  if (handle) {
    const rule = handle.rule;
    if (rule.kind === 'redirect') {
      // Like a real registry, only redirect what the client may read; otherwise answer as the registry does.
      if (await upstreamAllows(state, entry.url, headers)) {
        consume(handle, entry);
        return redirect(state, req, res, entry, rule);
      }
    } else {
      consume(handle, entry);
      switch (rule.kind) {
        case 'status':
          req.resume();
          return sendStatus(res, entry, rule.status, rule.headers ?? {}, rule.body ?? defaultErrorBody(rule.status));
        case 'no-multirange':
          req.resume();
          return sendStatus(res, entry, 400, {}, registryError('RANGE_INVALID', 'multiple ranges are not supported'));
        default:
          body = await applyForwardFault(state, rule, headers, req);
      }
    }
  }
  const asked = headers['x-fault-asked-range'];
  delete headers['x-fault-asked-range'];
  const responseHeaders = (h: IncomingHttpHeaders): OutgoingHttpHeaders => {
    const out = rewriteResponseHeaders(state, h);
    // shift-body: the body holds other bytes, the header claims the asked ones.
    const total = /\/(\d+|\*)$/.exec(String(h['content-range'] ?? ''))?.[1];
    if (asked !== undefined && total !== undefined) out['content-range'] = `bytes ${String(asked)}/${total}`;
    return out;
  };
  forward(state, req, res, entry, { target: entry.url, headers, body, pipeRequestBody: true, responseHeaders });
}

/** Request headers for upstream: hop-by-hop ones dropped, Host pointing at the registry. */
function forwardHeaders(incoming: IncomingHttpHeaders, upstreamHost: string): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  out['host'] = upstreamHost;
  return out;
}

function rewriteResponseHeaders(state: ProxyState, incoming: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  const location = incoming.location;
  if (location !== undefined) out['location'] = rewriteLocation(state, location);
  return out;
}

/** Upload session URLs etc. must keep the client on the proxy, not send it to the registry directly. */
function rewriteLocation(state: ProxyState, location: string): string {
  let parsed: URL;
  try {
    parsed = new URL(location);
  } catch {
    return location; // relative: already resolves against the proxy
  }
  if (parsed.origin !== state.upstream.origin) return location;
  return state.mainOrigin + parsed.pathname + parsed.search + parsed.hash;
}

/**
 * Moves a single Range `by` bytes on. With `keepAskedRange`, the response
 * will claim the asked range (its body holds other bytes: only digests can
 * tell); without, it honestly names the bytes it holds, which are not the
 * ones asked for. A range that cannot move (past the end) is left alone and
 * the registry answers it as it likes.
 */
function shiftRange(headers: OutgoingHttpHeaders, by: number, keepAskedRange: boolean): void {
  const m = /^bytes=(\d+)-(\d+)$/.exec(String(headers['range'] ?? ''));
  if (!m) return;
  const start = Number(m[1]);
  const end = Number(m[2]);
  headers['range'] = `bytes=${start + by}-${end + by}`;
  if (keepAskedRange) headers['x-fault-asked-range'] = `${start}-${end}`;
}

/** "bytes=0-9,20-29" → "bytes=0-9". */
function firstRangeOnly(range: string): string {
  const m = /^\s*bytes\s*=\s*([^,]*)/i.exec(range);
  return `bytes=${(m?.[1] ?? '').trim()}`;
}

async function upstreamAllows(state: ProxyState, target: string, headers: OutgoingHttpHeaders): Promise<boolean> {
  const probeHeaders = { ...headers };
  delete probeHeaders['range'];
  delete probeHeaders['content-length'];
  return new Promise((resolve) => {
    const probe = httpRequest(
      { host: state.upstream.hostname, port: state.upstream.port, method: 'HEAD', path: target, headers: probeHeaders, agent: state.agent },
      (up) => {
        up.resume();
        resolve(up.statusCode !== undefined && up.statusCode >= 200 && up.statusCode < 300);
      },
    );
    probe.on('error', () => resolve(false));
    probe.end();
  });
}

function redirect(
  state: ProxyState,
  req: IncomingMessage,
  res: ServerResponse,
  entry: ProxyRequestRecord,
  rule: { status?: number; to?: 'same' | 'other-host' },
): void {
  req.resume();
  const listener: ListenerName = rule.to === 'same' ? 'main' : 'other';
  const sig = randomBytes(12).toString('hex');
  const record: SignedUrl = { target: entry.url, listener, uses: 0 };
  if (req.headers.authorization !== undefined) record.authorization = req.headers.authorization;
  state.signed.set(sig, record);
  const origin = listener === 'main' ? state.mainOrigin : state.otherOrigin;
  const location = `${origin}${BLOB_PREFIX}${entry.path}?sig=${sig}`;
  sendStatus(res, entry, rule.status ?? 307, { location }, '');
}

// ------------------------------------------------------------------ signed URLs

async function serveSigned(state: ProxyState, req: IncomingMessage, res: ServerResponse, entry: ProxyRequestRecord, target: URL): Promise<void> {
  req.resume();
  const signedUrl = state.signed.get(target.searchParams.get('sig') ?? '');
  if (!signedUrl || signedUrl.listener !== entry.listener || !signedUrl.target.startsWith(entry.path)) {
    return sendStatus(res, entry, 403, { 'content-type': 'text/plain' }, 'SignatureDoesNotMatch: unknown or mismatched signature\n');
  }
  if (entry.listener === 'other' && entry.authorization) {
    // Pre-signed object-store URLs reject a second auth mechanism; a client must drop Authorization cross-host.
    return sendStatus(res, entry, 403, { 'content-type': 'text/plain' }, 'InvalidArgument: Authorization header must not be sent to a pre-signed URL\n');
  }
  const handle = findRule(state, requestInfo(req, entry), signedUrl);
  signedUrl.uses += 1;
  let body: BodyMode = { kind: 'pipe' };
  const headers = signedRequestHeaders(state, req, signedUrl);
  if (handle) {
    consume(handle, entry);
    const rule = handle.rule;
    switch (rule.kind) {
      case 'expire-redirect':
        return sendStatus(res, entry, 403, { 'content-type': 'text/plain' }, 'AccessDenied: Request has expired\n');
      case 'status':
        return sendStatus(res, entry, rule.status, rule.headers ?? {}, rule.body ?? defaultErrorBody(rule.status));
      case 'no-multirange':
        return sendStatus(res, entry, 400, { 'content-type': 'text/plain' }, 'InvalidRange: multiple ranges are not supported\n');
      default:
        body = await applyForwardFault(state, rule, headers, req);
    }
  }
  forward(state, req, res, entry, { target: signedUrl.target, headers, body, pipeRequestBody: false, responseHeaders: pickSignedHeaders });
}

/** Only what object storage would need: Range, plus the remembered credentials standing in for the signature. */
function signedRequestHeaders(state: ProxyState, req: IncomingMessage, signedUrl: SignedUrl): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { host: state.upstream.host };
  if (req.headers.range !== undefined) headers['range'] = req.headers.range;
  if (signedUrl.authorization !== undefined) headers['authorization'] = signedUrl.authorization;
  return headers;
}

function pickSignedHeaders(incoming: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name of SIGNED_RESPONSE_HEADERS) {
    const value = incoming[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

// ------------------------------------------------------------------ forwarding

interface ForwardOptions {
  /** Path + query on the registry. */
  target: string;
  headers: OutgoingHttpHeaders;
  body: BodyMode;
  /** Stream the client's request body upstream (pushes); signed URLs are GET/HEAD only. */
  pipeRequestBody: boolean;
  responseHeaders: (h: IncomingHttpHeaders) => OutgoingHttpHeaders;
}

function forward(state: ProxyState, req: IncomingMessage, res: ServerResponse, entry: ProxyRequestRecord, opts: ForwardOptions): void {
  const upReq = httpRequest({
    host: state.upstream.hostname,
    port: state.upstream.port,
    method: entry.method,
    path: opts.target,
    headers: opts.headers,
    agent: state.agent,
  });
  upReq.on('response', (upRes) => {
    entry.status = upRes.statusCode ?? 502;
    res.writeHead(entry.status, opts.responseHeaders(upRes.headers));
    res.on('finish', () => void (entry.complete = true));
    sendBody(upRes, res, entry, opts.body).catch((err: unknown) => failResponse(res, err));
  });
  upReq.on('error', (err) => {
    if (!res.headersSent) sendStatus(res, entry, 502, { 'content-type': 'text/plain' }, `fault-proxy: upstream error: ${err.message}\n`);
    else res.destroy();
  });
  // A client that goes away mid-transfer must not leave the upstream request hanging.
  res.on('close', () => {
    if (!res.writableFinished) upReq.destroy();
  });
  if (opts.pipeRequestBody) req.pipe(upReq);
  else upReq.end();
}

async function sendBody(upRes: IncomingMessage, res: ServerResponse, entry: ProxyRequestRecord, mode: BodyMode): Promise<void> {
  if (mode.kind === 'pipe') {
    upRes.on('data', (chunk: Buffer) => void (entry.bytes += chunk.length));
    // pipe() never ends `res` when the upstream body is cut short (e.g. Distribution's 416, whose
    // Content-Length is the blob size); pass the truncation on instead of leaving the client hanging.
    upRes.on('close', () => {
      if (!upRes.complete) res.destroy();
    });
    upRes.pipe(res);
    return;
  }
  if (mode.kind === 'flip') {
    const length = Number(upRes.headers['content-length'] ?? 0);
    const flips = new Set<number>();
    for (let i = 0; i < mode.count && length > 0; i++) flips.add(Math.floor(mode.random() * length));
    let pos = 0;
    for await (const c of upRes as AsyncIterable<Buffer>) {
      const chunk = Buffer.from(c);
      for (const f of flips) if (f >= pos && f < pos + chunk.length) chunk[f - pos] = chunk[f - pos]! ^ 0xff;
      pos += chunk.length;
      if (!(await writeChunk(res, chunk, entry))) return void upRes.destroy();
    }
    res.end();
    return;
  }
  for await (const chunk of upRes as AsyncIterable<Buffer>) {
    if (mode.kind === 'reset') {
      const room = mode.afterBytes - entry.bytes;
      if (chunk.length >= room) return resetAfter(res, upRes, entry, chunk.subarray(0, room));
      if (!(await writeChunk(res, chunk, entry))) return void upRes.destroy();
    } else if (!(await writeSlowly(res, chunk, entry, mode.bytesPerSecond))) {
      return void upRes.destroy();
    }
  }
  // A body shorter than afterBytes simply completes: there was nothing left to cut.
  res.end();
}

/** Sends the last bytes, then kills the connection so the client sees a truncated body. */
function resetAfter(res: ServerResponse, upRes: IncomingMessage, entry: ProxyRequestRecord, last: Buffer): void {
  upRes.destroy();
  const kill = (): void => void res.socket?.destroy();
  if (last.length === 0) {
    res.flushHeaders();
    setTimeout(kill, 20);
    return;
  }
  entry.bytes += last.length;
  res.write(last, kill);
}

async function writeSlowly(res: ServerResponse, chunk: Buffer, entry: ProxyRequestRecord, bytesPerSecond: number): Promise<boolean> {
  const slice = Math.max(1, Math.floor(bytesPerSecond / 20)); // ~20 writes per second
  for (let off = 0; off < chunk.length; off += slice) {
    const part = chunk.subarray(off, off + slice);
    if (!(await writeChunk(res, part, entry))) return false;
    await sleep((part.length / bytesPerSecond) * 1000);
  }
  return true;
}

/** Writes with backpressure; false when the client has gone away. */
async function writeChunk(res: ServerResponse, chunk: Buffer, entry: ProxyRequestRecord): Promise<boolean> {
  if (res.destroyed) return false;
  entry.bytes += chunk.length;
  if (res.write(chunk)) return true;
  return new Promise((resolve) => {
    const done = (ok: boolean) => (): void => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

// ------------------------------------------------------------------ canned responses

function sendStatus(
  res: ServerResponse,
  entry: ProxyRequestRecord,
  status: number,
  headers: Record<string, string>,
  body: string | Uint8Array,
): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const hasType = Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
  const head: OutgoingHttpHeaders = { ...(hasType || buf.length === 0 ? {} : { 'content-type': 'application/json' }), ...headers };
  head['content-length'] = buf.length;
  entry.status = status;
  res.on('finish', () => void (entry.complete = true));
  res.writeHead(status, head);
  if (entry.method !== 'HEAD') entry.bytes += buf.length;
  res.end(entry.method === 'HEAD' ? undefined : buf);
}

function defaultErrorBody(status: number): string {
  if (status === 429) return registryError('TOOMANYREQUESTS', 'injected: too many requests');
  if (status === 404) return registryError('BLOB_UNKNOWN', 'injected: not found');
  return registryError('UNKNOWN', `injected status ${status}`);
}

function registryError(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

function failResponse(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = `fault-proxy internal error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`;
  res.writeHead(500, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Faults that still forward the request (both listeners): a delay, Range
 * rewritten or dropped, or a body that breaks or trickles. Returns how to
 * send the body.
 */
async function applyForwardFault(state: ProxyState, rule: FaultRule, headers: OutgoingHttpHeaders, req: IncomingMessage): Promise<BodyMode> {
  switch (rule.kind) {
    case 'delay':
      await sleep(rule.ms);
      break;
    case 'ignore-range':
      delete headers['range'];
      delete headers['if-range'];
      break;
    case 'partial-multirange':
      headers['range'] = firstRangeOnly(req.headers.range ?? '');
      break;
    case 'reset-mid-body':
      return { kind: 'reset', afterBytes: rule.afterBytes };
    case 'slow-body':
      return { kind: 'slow', bytesPerSecond: rule.bytesPerSecond };
    case 'flip-bytes':
      return { kind: 'flip', count: rule.count ?? 1, random: state.random };
    case 'wrong-content-range':
    case 'shift-body':
      shiftRange(headers, rule.by ?? 1, rule.kind === 'shift-body');
      break;
    default:
      break; // redirect / expire-redirect: handled by the caller on the listener they apply to
  }
  return { kind: 'pipe' };
}
