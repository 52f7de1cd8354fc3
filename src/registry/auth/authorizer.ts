import { RegistryError, safeUrl } from '../errors.js';
import type { Endpoint } from '../hosts.js';
import type { Transport } from '../transport.js';
import type { Challenge } from './challenge.js';
import type { CredentialSource, Credentials } from './credentials.js';

interface CachedToken {
  header: string;
  expiresAt: number;
}

/** Tokens are refreshed this long before they expire. */
const EXPIRY_MARGIN_MS = 10_000;
/** The token spec's default lifetime when the server names none. */
const DEFAULT_TOKEN_SECONDS = 60;

/**
 * Computes the Authorization header for requests to an endpoint: nothing
 * until the registry challenges, then Basic credentials or a Bearer token
 * fetched from the challenge's realm for the request's scope. Tokens are
 * cached per endpoint and scope until they expire. Credential values never
 * reach an error message.
 */
export class Authorizer {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, Promise<CachedToken>>();

  constructor(private readonly credentials: CredentialSource, private readonly transport: Transport) {}

  /** Remembers how an endpoint asked to be authenticated (from a 401). */
  onChallenge(ep: Endpoint, challenge: Challenge | undefined): void {
    if (challenge) this.challenges.set(ep.host, challenge);
  }

  /** Drops a token that the registry refused. */
  invalidate(ep: Endpoint, scope: string): void {
    this.tokens.delete(`${ep.host}|${scope}`);
  }

  /** The header to send, or undefined while the endpoint has not asked for auth. */
  async header(ep: Endpoint, repository: string, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const challenge = this.challenges.get(ep.host);
    if (!challenge) return undefined;
    // Credentials of the origin registry are not sent to a mirror: a mirror uses its own entry.
    const lookup = (): Promise<Credentials | undefined> => this.credentials.lookup(ep.mirror ? ep.host : ep.registry, repository);
    if (challenge.scheme === 'basic') {
      const creds = await lookup();
      if (!creds?.username || creds.password === undefined) {
        throw new RegistryError('UNAUTHORIZED', `${ep.host} requires a username and password for ${repository}, and none is configured`, 401);
      }
      return 'Basic ' + Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
    }
    if (challenge.scheme !== 'bearer') {
      throw new RegistryError('UNSUPPORTED', `${ep.host} asks for the ${challenge.scheme} authentication scheme, which is not supported`);
    }
    const key = `${ep.host}|${scope}`;
    let pending = this.tokens.get(key);
    if (pending) {
      // A failed fetch leaves the map as it settles: one found here was in flight, and its failure
      // is this request's too (asking again at once with the same credentials fails the same way).
      const cached = await pending;
      if (cached.expiresAt - EXPIRY_MARGIN_MS > Date.now()) return cached.header;
      if (this.tokens.get(key) === pending) this.tokens.delete(key);
    }
    // Set before the first await: requests sent together (a manifest and the early tail read beside
    // it) share one token request, also when the credentials lookup takes each of them a while.
    pending = lookup().then((creds) => this.fetchToken(ep, challenge, scope, creds, signal));
    this.tokens.set(key, pending);
    pending.catch(() => this.tokens.get(key) === pending && this.tokens.delete(key));
    return (await pending).header;
  }

  private async fetchToken(ep: Endpoint, challenge: Challenge, scope: string, creds: Credentials | undefined, signal?: AbortSignal): Promise<CachedToken> {
    const realm = challenge.params.realm;
    if (!realm) throw new RegistryError('PROTOCOL', `${ep.host}: Bearer challenge without a realm`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError('PROTOCOL', `${ep.host}: Bearer realm is not a URL`);
    }
    const service = challenge.params.service;
    const started = Date.now();
    let body: Buffer | undefined;
    const headers: Record<string, string> = { 'user-agent': 'estargz-store' };
    let method: 'GET' | 'POST' = 'GET';
    if (creds?.identityToken) {
      // An identity token is an OAuth2 refresh token: exchange it with a POST.
      method = 'POST';
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'estargz-store', scope });
      if (service) form.set('service', service);
      body = Buffer.from(form.toString());
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scope.split(' ')) url.searchParams.append('scope', s);
      if (creds?.username && creds.password !== undefined) {
        headers.authorization = 'Basic ' + Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
      }
    }
    const who = creds ? 'with the configured credentials' : 'anonymously';
    return this.transport.send({ method, url: url.toString(), headers, ...(body && { body }), timeoutMs: ep.timeoutMs, ...(signal && { signal }) }, async (res) => {
      if (res.statusCode === 401 || res.statusCode === 403) {
        await res.body.dump();
        throw new RegistryError('UNAUTHORIZED', `token server ${safeUrl(url)} refused a token for ${scope} ${who} (${res.statusCode})`, res.statusCode);
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new RegistryError('HTTP_STATUS', `token server ${safeUrl(url)} answered ${res.statusCode} for ${scope}`, res.statusCode);
      }
      // Not JSON: treated below as an answer without a token, which is an error naming the token server.
      const doc = (await res.body.json().catch(() => ({}))) as { token?: string; access_token?: string; expires_in?: number };
      const token = doc.token ?? doc.access_token;
      if (!token) throw new RegistryError('PROTOCOL', `token server ${safeUrl(url)} answered without a token`);
      // Lifetime counts from when we asked, by our clock: the server's issued_at may be skewed.
      const lifetime = (doc.expires_in && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS) * 1000;
      return { header: `Bearer ${token}`, expiresAt: started + lifetime };
    });
  }
}
