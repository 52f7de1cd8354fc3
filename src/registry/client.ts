import type { Logger } from '../log/logger.js';
import { SingleRangeHosts } from './range-mode.js';
import { BufferPool } from '../util/buffer-pool.js';
import { Authorizer } from './auth/authorizer.js';
import { parseChallenge, type Challenge } from './auth/challenge.js';
import { CredentialChain, RuntimeCredentials, defaultAuthFiles, type CredentialSource } from './auth/credentials.js';
import { EndpointHealth, type BackoffPolicy, type Verdict } from './endpoint-health.js';
import { RegistryError, isRegistryError } from './errors.js';
import { endpointKey, endpointUrl, endpointsFor, type Endpoint, type ResolverConfig } from './hosts.js';
import { NO_TRAFFIC, type RegistryOperation, type RegistryTraffic } from './traffic.js';
import { DEFAULT_RETRY, Transport, isRetryableStatus, type HttpCall, type HttpResponse, type RetryPolicy } from './transport.js';

/** A repository on a registry. */
export interface RepoRef {
  registry: string;
  repository: string;
}

export interface RepoRequest {
  method: HttpCall['method'];
  /** Path after `/v2/<repository>/`, e.g. `blobs/sha256:…`; may carry a query. */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
  /** Needs push access: only the origin registry is used, never a mirror. */
  push?: boolean;
  /** Extra token scopes, e.g. pull access to the source repository of a cross-repository mount. */
  extraScopes?: string[];
  signal?: AbortSignal;
  /** What the request is for, as the traffic hook reports it; unlabelled requests are reported without one. */
  operation?: RegistryOperation;
  /**
   * A 401 is final: the request is not sent again with fresh credentials
   * (it sends what the authorizer has or is fetching for its scope, shared
   * with the requests beside it, and its challenge is remembered). For a
   * request sent beside another that will ask for credentials anyway (the
   * resolver's early tail read beside the manifest): two token requests for
   * one set of credentials, a wrong one twice, is what a registry's lockout
   * counts.
   */
  noAuthRetry?: boolean;
}

export interface CallContext {
  endpoint: Endpoint;
  url: string;
  /** Headers that authorize a request to this endpoint (for following up, e.g. upload locations). */
  authHeaders: Record<string, string>;
}

export interface RegistryClientOptions {
  /** Where mirror outages are reported. */
  log: Logger;
  resolver?: ResolverConfig;
  credentials?: CredentialSource;
  retry?: RetryPolicy;
  transport?: Transport;
  /** How long a mirror that failed is skipped (default DEFAULT_MIRROR_BACKOFF). */
  mirrorBackoff?: BackoffPolicy;
  /** Clock for the mirror back-off (tests). */
  now?: () => number;
  /** Told of every request, retry and range split (the daemon's feeds the metrics); none by default. */
  traffic?: RegistryTraffic;
}

const UNAUTHORIZED = Symbol('unauthorized');

/** A failure that says the endpoint is unavailable (as opposed to lacking the content or refusing us). */
function isUnavailable(err: unknown): boolean {
  if (!isRegistryError(err)) return false;
  if (err.code === 'NETWORK' || err.code === 'TIMEOUT') return true;
  return err.code === 'HTTP_STATUS' && err.status !== undefined && isRetryableStatus(err.status);
}

/**
 * The HTTP side of the registry: endpoints (mirrors, then the origin), auth
 * (challenge → Basic or Bearer token, one refresh on 401), retries. Operations
 * (manifests, blobs, push) are built on `call`.
 */
export class RegistryClient {
  readonly transport: Transport;
  readonly runtimeCredentials = new RuntimeCredentials();
  /** Hosts that get single-range requests for a while (see SingleRangeHosts). */
  readonly singleRangeHosts = new SingleRangeHosts();
  /** Memory for ranged response bodies, used again once their readers let go (see BufferPool, RemoteBlob.readOwned). */
  readonly bodyPool = new BufferPool();
  private readonly authorizer: Authorizer;
  private readonly log: Logger;
  private readonly endpointCache = new Map<string, Endpoint[]>();
  /** Mirrors that failed lately, skipped for a while; the origin is never skipped. */
  readonly mirrorHealth: EndpointHealth;
  /** Where this client's requests, retries and range splits are reported (RemoteBlob reports through it too). */
  readonly traffic: RegistryTraffic;

  constructor(private readonly opts: RegistryClientOptions) {
    this.log = opts.log;
    this.traffic = opts.traffic ?? NO_TRAFFIC;
    this.transport = opts.transport ?? new Transport(opts.retry ?? DEFAULT_RETRY);
    this.mirrorHealth = new EndpointHealth(opts.mirrorBackoff, opts.now);
    const credentials = opts.credentials ?? new CredentialChain([this.runtimeCredentials, ...defaultAuthFiles()]);
    this.authorizer = new Authorizer(credentials, this.transport);
  }

  endpoints(registry: string): Endpoint[] {
    let eps = this.endpointCache.get(registry);
    if (!eps) {
      eps = endpointsFor(registry, this.opts.resolver);
      this.endpointCache.set(registry, eps);
    }
    return eps;
  }

  /**
   * Sends a request about a repository to the first endpoint that answers it
   * (a failing mirror falls through to the next, then to the origin) and
   * returns what `handle` makes of the response. `handle` sees every status
   * but 401 (handled here) and retryable ones (handled by the transport; a
   * mirror's 429/5xx is a failure of that mirror). A mirror that is down
   * (refused, timed out, 429/5xx) is left at once for the next host, without
   * retries, and skipped for a while (`mirrorHealth`).
   */
  async call<T>(repo: RepoRef, req: RepoRequest, handle: (res: HttpResponse, ctx: CallContext) => Promise<T>): Promise<T> {
    const endpoints = this.endpoints(repo.registry).filter((ep) => !req.push || !ep.mirror);
    let lastError: unknown;
    for (const ep of endpoints) {
      if (!ep.mirror) return this.callEndpoint(ep, repo, req, handle, false);
      const key = endpointKey(ep);
      if (!this.mirrorHealth.available(key)) continue;
      const wasDown = this.mirrorHealth.isDown(key);
      let verdict: Verdict = 'up';
      try {
        return await this.callEndpoint(ep, repo, req, handle, true);
      } catch (err) {
        lastError = err;
        if (req.signal?.aborted) {
          verdict = 'unknown';
          throw err;
        }
        // A mirror that fails, lacks the content or refuses us: try the next host.
        if (isUnavailable(err)) verdict = 'down';
      } finally {
        const backoffMs = this.mirrorHealth.report(key, verdict);
        if (backoffMs !== undefined) {
          this.log.warn({ mirror: key, registry: repo.registry, err: (lastError as Error)?.message, skipMs: backoffMs }, 'mirror unavailable; using the next host and skipping this mirror for a while');
        } else if (wasDown && verdict === 'up') {
          this.log.info({ mirror: key, registry: repo.registry }, 'mirror available again');
        }
      }
    }
    throw lastError ?? new RegistryError('NETWORK', `${repo.registry}: no host to send ${req.method} ${repo.repository}/${req.path.split('?')[0]} to`);
  }

  private async callEndpoint<T>(ep: Endpoint, repo: RepoRef, req: RepoRequest, handle: (res: HttpResponse, ctx: CallContext) => Promise<T>, failover: boolean): Promise<T> {
    const scope = [`repository:${repo.repository}:${req.push ? 'pull,push' : 'pull'}`, ...(req.extraScopes ?? [])].join(' ');
    const url = endpointUrl(ep, `${repo.repository}/${req.path}`);
    for (let attempt = 0; ; attempt++) {
      const auth = await this.authorizer.header(ep, repo.repository, scope, req.signal);
      const authHeaders: Record<string, string> = auth ? { authorization: auth } : {};
      let challenge: Challenge | undefined;
      const result = await this.transport.send({
        method: req.method,
        url,
        headers: { 'user-agent': 'estargz-store', ...ep.headers, ...req.headers, ...authHeaders },
        ...(req.body && { body: req.body }),
        timeoutMs: ep.timeoutMs,
        ...(req.signal && { signal: req.signal }),
        failover,
        traffic: this.traffic,
        ...(req.operation && { operation: req.operation }),
      }, async (res) => {
        if (failover && isRetryableStatus(res.statusCode)) {
          await res.body.dump();
          throw new RegistryError('HTTP_STATUS', `${req.method} ${ep.host}/${repo.repository}/${req.path.split('?')[0]}: ${res.statusCode}`, res.statusCode);
        }
        if (res.statusCode !== 401) return handle(res, { endpoint: ep, url, authHeaders });
        challenge = parseChallenge(res.headers['www-authenticate']);
        await res.body.dump();
        return UNAUTHORIZED;
      });
      if (result !== UNAUTHORIZED) return result as T;
      if (auth && !req.noAuthRetry) this.authorizer.invalidate(ep, scope);
      this.authorizer.onChallenge(ep, challenge);
      // One retry with fresh credentials; a second 401 is final.
      if (attempt >= 1 || !challenge || req.noAuthRetry) {
        throw new RegistryError('UNAUTHORIZED', `${ep.host} refused ${req.method} ${repo.repository}/${req.path.split('?')[0]} (401 Unauthorized${auth ? ', credentials were sent' : ', no credentials were found'})`, 401);
      }
      this.traffic.retry({ operation: req.operation, reason: 'auth' });
    }
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

/** Maps a final unexpected status to an error naming the operation. */
export async function statusError(res: HttpResponse, what: string): Promise<RegistryError> {
  let detail = '';
  try {
    const text = (await res.body.text()).slice(0, 300);
    const doc = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    detail = doc.errors?.map((e) => `${e.code ?? ''} ${e.message ?? ''}`.trim()).join('; ') ?? '';
  } catch {
    // not a registry error document
  }
  const code = res.statusCode === 404 ? 'NOT_FOUND' : res.statusCode === 403 ? 'DENIED' : 'HTTP_STATUS';
  return new RegistryError(code, `${what}: ${res.statusCode}${detail ? ` (${detail})` : ''}`, res.statusCode);
}
