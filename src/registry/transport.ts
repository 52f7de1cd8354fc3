import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type { Agent as UndiciAgent, Dispatcher } from 'undici';
import { RegistryError, safeUrl } from './errors.js';
import type { RegistryOperation, RegistryTraffic, RetryReason } from './traffic.js';

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number;
  minWaitMs: number;
  maxWaitMs: number;
}

/**
 * The two parts of undici the store uses, loaded alone: undici's entry point
 * loads every part (fetch, WebSocket, caches, mocks, proxies…), ~8 MiB more
 * resident memory and ~4 MiB more V8 heap for the store process's whole life
 * (bench/results/footprint-breakdown.md). Types still come from the package.
 */
const requireCjs = createRequire(import.meta.url);
const Agent = requireCjs('undici/lib/dispatcher/agent.js') as typeof UndiciAgent;
const dispatcherRequest = requireCjs('undici/lib/api/api-request.js') as (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;

/** The Go stargz-store's defaults ([blob] max_retries, min_wait_msec, max_wait_msec). */
export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 5, minWaitMs: 30, maxWaitMs: 300_000 };

export interface HttpCall {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  url: string;
  headers: Record<string, string>;
  /** Replayable body (retries resend it). */
  body?: Buffer;
  /** Idle timeout for headers and between body chunks; 0 = none. */
  timeoutMs: number;
  signal?: AbortSignal;
  /**
   * Another host can serve this request (a mirror, with the origin behind
   * it): refused connections, timeouts and 429/5xx are handed back at once
   * instead of spending the retry budget here. Only what may be a fluke of
   * one connection (a reset of a kept-alive socket, a body cut short) is
   * retried, once.
   */
  failover?: boolean;
  /** Where each attempt, and each retry, is reported (the registry client's hook)… */
  traffic?: RegistryTraffic;
  /** …under this label. */
  operation?: RegistryOperation;
}

export type HttpResponse = Dispatcher.ResponseData;

/** Thrown by a response handler when the body failed mid-way and the call may be retried. */
export class RetryableError extends Error {}

const RETRYABLE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

function isRetryableNetworkError(err: unknown): boolean {
  if (err instanceof RetryableError) return true;
  const code = (err as { code?: string })?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  return code !== undefined && RETRYABLE_CODES.has(code);
}

/** Failures of one connection rather than of the server: worth one retry even when another host could answer. */
const CONNECTION_FLUKE_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

function retryReason(err: unknown): RetryReason {
  return err instanceof RetryableError ? 'body' : 'network';
}

/** Body bytes of an answer the handler took: a 2xx GET's Content-Length (a HEAD's describes a body never sent). */
function bodyBytes(call: HttpCall, res: HttpResponse): number {
  if (call.method === 'HEAD' || res.statusCode < 200 || res.statusCode > 299) return 0;
  const n = Number(Array.isArray(res.headers['content-length']) ? res.headers['content-length'][0] : res.headers['content-length']);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

function isConnectionFluke(err: unknown): boolean {
  if (err instanceof RetryableError) return true;
  const code = (err as { code?: string })?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  return code !== undefined && CONNECTION_FLUKE_CODES.has(code);
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status !== 501);
}

/** Seconds or an HTTP date → milliseconds to wait, if the header says. */
function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * Sends HTTP requests with keep-alive pools, per-request idle timeouts, and
 * retries with exponential backoff and jitter on connection errors, 429 and
 * 5xx (Retry-After honoured), bounded by count and by the caller's signal.
 */
export class Transport {
  readonly dispatcher: Dispatcher;
  /**
   * Origins a response of which was handled in this turn of the event loop.
   * undici frees the connection of a finished response only in a later
   * turn: a request sent before then (a config right after its manifest, a
   * TOC right after the footer) finds the connection busy and opens another,
   * which costs a round trip for the handshake (more with TLS). A request to
   * such an origin waits for that turn instead (see `send`).
   */
  private readonly justFreed = new Set<string>();

  constructor(readonly retry: RetryPolicy = DEFAULT_RETRY, dispatcher?: Dispatcher) {
    this.dispatcher = dispatcher ?? new Agent({ keepAliveTimeout: 30_000, connections: 16, pipelining: 1 });
  }

  private freed(origin: string): void {
    if (this.justFreed.has(origin)) return;
    this.justFreed.add(origin);
    setImmediate(() => this.justFreed.delete(origin));
  }

  /**
   * Sends `call` and hands the response to `handle`, which must consume or
   * dump the body. Retryable statuses are retried here; `handle` sees every
   * other status (and, with `failover`, those too), and may throw
   * RetryableError to retry a broken body.
   */
  async send<T>(call: HttpCall, handle: (res: HttpResponse) => Promise<T>): Promise<T> {
    let lastError: unknown;
    const maxRetries = call.failover ? Math.min(1, this.retry.maxRetries) : this.retry.maxRetries;
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      call.signal?.throwIfAborted();
      let waitMs: number | undefined;
      let reason: RetryReason = 'network';
      const started = performance.now();
      let status: number | undefined;
      let bytes = 0;
      try {
        const url = new URL(call.url);
        if (this.justFreed.has(url.origin)) await nextTurn();
        const res = await dispatcherRequest.call(this.dispatcher, {
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method: call.method,
          headers: call.headers,
          body: call.body,
          headersTimeout: call.timeoutMs,
          bodyTimeout: call.timeoutMs,
          signal: call.signal,
        });
        status = res.statusCode;
        if (isRetryableStatus(res.statusCode) && attempt < maxRetries && !call.failover) {
          await res.body.dump();
          waitMs = retryAfterMs(res.headers['retry-after']);
          reason = 'status';
          lastError = new RegistryError('HTTP_STATUS', `${call.method} ${safeUrl(call.url)}: ${res.statusCode}`, res.statusCode);
        } else {
          const out = await handle(res);
          bytes = bodyBytes(call, res);
          this.freed(url.origin);
          return out;
        }
      } catch (err) {
        if (call.signal?.aborted) throw timeoutError(call, call.signal.reason);
        const giveUp = !isRetryableNetworkError(err) || attempt === maxRetries || (call.failover === true && !isConnectionFluke(err));
        if (giveUp) throw networkError(call, err);
        reason = retryReason(err);
        lastError = err;
      } finally {
        call.traffic?.request({ operation: call.operation, method: call.method, status, bytes, seconds: (performance.now() - started) / 1000 });
      }
      call.traffic?.retry({ operation: call.operation, reason });
      await sleep(this.backoffMs(attempt, waitMs), undefined, call.signal ? { signal: call.signal } : undefined)
        // The wait is cut short only by the caller's signal: that is the caller's timeout, reported as one.
        .catch(() => { throw timeoutError(call, call.signal?.reason); });
    }
    throw networkError(call, lastError);
  }

  /** Exponential from minWait, capped at maxWait, with jitter in [d, 2d) as the reference does. */
  private backoffMs(attempt: number, retryAfter: number | undefined): number {
    if (retryAfter !== undefined) return Math.min(retryAfter, this.retry.maxWaitMs);
    const d = Math.min(this.retry.minWaitMs * 2 ** attempt, this.retry.maxWaitMs);
    return d + Math.random() * d;
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

function networkError(call: HttpCall, err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  const code = (err as { code?: string })?.code;
  const message = (err as Error)?.message ?? String(err);
  const isTimeout = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT';
  return new RegistryError(isTimeout ? 'TIMEOUT' : 'NETWORK', `${call.method} ${safeUrl(call.url)}: ${code ? `${code}: ` : ''}${message}`, undefined, { cause: err });
}

function timeoutError(call: HttpCall, reason: unknown): RegistryError {
  return new RegistryError('TIMEOUT', `${call.method} ${safeUrl(call.url)}: gave up: ${reason instanceof Error ? reason.message : 'aborted'}`);
}

/**
 * One request through a Transport to a throwaway server on 127.0.0.1, so the
 * process's first registry request does not pay for undici's one-time set-up:
 * it compiles its HTTP parser (WebAssembly) on the first connection, ~12 ms
 * here, which a first lookup would otherwise wait for.
 */
export async function warmUpHttp(): Promise<void> {
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"schemaVersion":2}'));
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const transport = new Transport({ maxRetries: 0, minWaitMs: 0, maxWaitMs: 0 }, new Agent());
  try {
    const { port } = server.address() as AddressInfo;
    await transport.send({ method: 'GET', url: `http://127.0.0.1:${port}/v2/`, headers: {}, timeoutMs: 5000 }, (res) => res.body.json());
  } finally {
    await transport.close();
    await new Promise((resolve) => server.close(resolve));
  }
}
