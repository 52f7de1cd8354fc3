// A minimal Docker Registry v2 token server for tests, speaking the protocol in
// https://distribution.github.io/distribution/spec/auth/token/ (GET /token with
// Basic auth) and the OAuth2 variant (POST /token, password/refresh_token grant).
//
// Tokens are ES256 JWTs whose header carries the signing certificate in `x5c`:
// Distribution 2.8 verifies that chain against `auth.token.rootcertbundle`
// (which is `certPath`) and then checks the signature with the leaf key, so no
// libtrust `kid` fingerprint is needed.
//
// Anonymous requests (no Authorization header) get a token with an empty
// `access` list, as Docker Hub does for unknown/private repositories: the
// registry then answers 401 `insufficient_scope`. Set `anonymous: 'deny'` to
// get a 401 from the token server instead. Wrong credentials always get 401.

import { execFile as execFileCb } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

export interface TokenServerOptions {
  /** username → password of the accounts that may authenticate. */
  users: Record<string, string>;
  /** Audience (`aud`) put in tokens; must equal the registry's `auth.token.service`. */
  service?: string;
  /** `iss` put in tokens; must equal the registry's `auth.token.issuer`. */
  issuer?: string;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
  /** What an unauthenticated request gets: a token without access (default) or a 401. */
  anonymous?: 'empty-token' | 'deny';
  /**
   * Which of the requested actions an authenticated account gets for a
   * resource; default: all of them.
   */
  grant?: (account: string, scope: ParsedScope) => string[];
}

export interface ParsedScope {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  method: 'GET' | 'POST';
  /** The requested scopes joined by a space, as a client would send them. */
  scope?: string;
  service?: string;
  /** The account that authenticated (absent for anonymous requests). */
  account?: string;
  /** True when valid credentials were presented (anonymous and wrong passwords are false). */
  authorized: boolean;
  /** The HTTP status the token server answered with. */
  status: number;
}

export interface TokenServer {
  /** http://127.0.0.1:PORT/token — the registry's `auth.token.realm`. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate bundle for the registry's `auth.token.rootcertbundle`. */
  certPath: string;
  /** Every token request, in arrival order. Clear with `requests.length = 0`. */
  requests: TokenRequestRecord[];
  stop(): Promise<void>;
}

interface SigningMaterial {
  dir: string;
  certPath: string;
  key: KeyObject;
  /** Base64 (standard alphabet) DER of the certificate, for the `x5c` header. */
  certDerB64: string;
}

interface Grant {
  account?: string;
  authorized: boolean;
}

const DEFAULT_SERVICE = 'estargz-test-registry';
const DEFAULT_ISSUER = 'estargz-test-token-issuer';
const OPENSSL_HINT = 'install the Debian package openssl: apt-get install openssl';

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const service = opts.service ?? DEFAULT_SERVICE;
  const issuer = opts.issuer ?? DEFAULT_ISSUER;
  const material = await makeSigningMaterial(issuer);
  const requests: TokenRequestRecord[] = [];
  const refreshTokens = new Map<string, string>();
  const ctx: HandlerContext = { opts, service, issuer, material, requests, refreshTokens };

  const server = createServer((req, res) => {
    handle(ctx, req, res).catch((err: unknown) => sendJson(res, 500, { error: String(err) }));
  });
  const port = await listen(server);
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath: material.certPath,
    requests,
    async stop() {
      await closeServer(server);
      await rm(material.dir, { recursive: true, force: true });
    },
  };
}

/** A self-signed P-256 certificate made by the openssl CLI; the key is loaded into node:crypto. */
async function makeSigningMaterial(issuer: string): Promise<SigningMaterial> {
  const dir = await mkdtemp(join(tmpdir(), 'estargz-token-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  try {
    await execFile('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${issuer}`,
    ]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`token server: openssl not found; ${OPENSSL_HINT}`);
    throw new Error(`token server: openssl failed to make a certificate: ${e.stderr ?? e.message}`);
  }
  const key = createPrivateKey(await readFile(keyPath, 'utf8'));
  const certDerB64 = pemBody(await readFile(certPath, 'utf8'));
  return { dir, certPath, key, certDerB64 };
}

/** The base64 between the BEGIN/END lines of a single-certificate PEM is exactly base64(DER). */
function pemBody(pem: string): string {
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
}

interface HandlerContext {
  opts: TokenServerOptions;
  service: string;
  issuer: string;
  material: SigningMaterial;
  requests: TokenRequestRecord[];
  /** refresh token → account, for the OAuth2 refresh_token grant. */
  refreshTokens: Map<string, string>;
}

async function handle(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (url.pathname !== '/token') return sendJson(res, 404, { error: 'not found' });
  if (req.method === 'GET') return handleGet(ctx, req, res, url);
  if (req.method === 'POST') return handlePost(ctx, req, res);
  res.setHeader('allow', 'GET, POST');
  sendJson(res, 405, { error: 'method not allowed' });
}

/** Docker token protocol: credentials in Basic auth, scopes as (repeatable) query parameters. */
function handleGet(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const scopes = url.searchParams.getAll('scope').flatMap(splitScopes);
  const service = url.searchParams.get('service') ?? undefined;
  const grant = checkBasicAuth(ctx, req.headers.authorization);
  const deny = grant === null || (!grant.authorized && ctx.opts.anonymous === 'deny');
  const record = recordRequest(ctx, 'GET', scopes, service, grant);
  if (deny) {
    res.setHeader('www-authenticate', 'Basic realm="estargz-test-token-server"');
    record.status = 401;
    return sendJson(res, 401, unauthorizedBody());
  }
  const issued = issueToken(ctx, grant.account, scopes);
  record.status = 200;
  sendJson(res, 200, { token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt });
}

/** OAuth2 variant (used by containerd and others): form-encoded password or refresh_token grant. */
async function handlePost(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const form = new URLSearchParams(await readBody(req));
  const scopes = form.getAll('scope').flatMap(splitScopes);
  const service = form.get('service') ?? undefined;
  const grant = checkFormGrant(ctx, form);
  const record = recordRequest(ctx, 'POST', scopes, service, grant ?? undefined);
  if (grant === null) {
    const known = ['password', 'refresh_token'].includes(form.get('grant_type') ?? '');
    record.status = known ? 401 : 400;
    return sendJson(res, record.status, { error: known ? 'invalid_grant' : 'unsupported_grant_type' });
  }
  const issued = issueToken(ctx, grant.account, scopes);
  const body: Record<string, unknown> = {
    access_token: issued.token,
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
    scope: scopes.join(' '),
  };
  if (form.get('access_type') === 'offline' && grant.account !== undefined) {
    const refresh = randomBytes(16).toString('hex');
    ctx.refreshTokens.set(refresh, grant.account);
    body['refresh_token'] = refresh;
  }
  record.status = 200;
  sendJson(res, 200, body);
}

/** null = wrong credentials; otherwise the (possibly anonymous) grant. */
function checkBasicAuth(ctx: HandlerContext, header: string | undefined): Grant | null {
  if (header === undefined) return { authorized: false };
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return checkPassword(ctx, decoded.slice(0, colon), decoded.slice(colon + 1));
}

function checkFormGrant(ctx: HandlerContext, form: URLSearchParams): Grant | null {
  switch (form.get('grant_type')) {
    case 'password':
      return checkPassword(ctx, form.get('username') ?? '', form.get('password') ?? '');
    case 'refresh_token': {
      const account = ctx.refreshTokens.get(form.get('refresh_token') ?? '');
      return account === undefined ? null : { account, authorized: true };
    }
    default:
      return null;
  }
}

function checkPassword(ctx: HandlerContext, user: string, password: string): Grant | null {
  const expected = ctx.opts.users[user];
  return expected !== undefined && expected === password ? { account: user, authorized: true } : null;
}

function recordRequest(
  ctx: HandlerContext,
  method: 'GET' | 'POST',
  scopes: string[],
  service: string | undefined,
  grant: Grant | undefined | null,
): TokenRequestRecord {
  const record: TokenRequestRecord = { method, authorized: grant?.authorized ?? false, status: 0 };
  if (scopes.length > 0) record.scope = scopes.join(' ');
  if (service !== undefined) record.service = service;
  if (grant?.account !== undefined) record.account = grant.account;
  ctx.requests.push(record);
  return record;
}

/** A scope parameter may itself hold several space-separated scopes. */
function splitScopes(value: string): string[] {
  return value.split(' ').filter((s) => s.length > 0);
}

/** `repository:name:pull,push` — the name sits between the first and the last colon. */
export function parseScope(scope: string): ParsedScope | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  const actions = scope.slice(last + 1).split(',').filter((a) => a.length > 0);
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

function issueToken(ctx: HandlerContext, account: string | undefined, scopes: string[]): IssuedToken {
  const now = Math.floor(Date.now() / 1000);
  const expiresIn = ctx.opts.expiresIn ?? 300;
  const claims = {
    iss: ctx.issuer,
    sub: account ?? '',
    aud: ctx.service, // a plain string: Distribution 2.8's ClaimSet.Audience is a string
    exp: now + expiresIn,
    nbf: now - 1,
    iat: now,
    jti: randomBytes(12).toString('hex'),
    access: account === undefined ? [] : grantedAccess(ctx, account, scopes),
  };
  const header = { typ: 'JWT', alg: 'ES256', x5c: [ctx.material.certDerB64] };
  return { token: signJwt(header, claims, ctx.material.key), expiresIn, issuedAt: new Date(now * 1000).toISOString() };
}

function grantedAccess(ctx: HandlerContext, account: string, scopes: string[]): ParsedScope[] {
  const out: ParsedScope[] = [];
  for (const raw of scopes) {
    const scope = parseScope(raw);
    if (scope === null) continue;
    const actions = ctx.opts.grant ? ctx.opts.grant(account, scope) : scope.actions;
    out.push({ type: scope.type, name: scope.name, actions });
  }
  return out;
}

/** JWS compact form; ES256 signatures are raw r||s (ieee-p1363), not DER. */
function signJwt(header: object, claims: object, key: KeyObject): string {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

function b64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

function unauthorizedBody(): object {
  return { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] };
}

function sendJson(res: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Listens on an ephemeral 127.0.0.1 port and returns it. */
export async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Closes a server, dropping idle keep-alive connections so close() does not wait for their timeout. */
export async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  // Connections still mid-response are cut after a grace period rather than waited for indefinitely.
  const timer = setTimeout(() => server.closeAllConnections(), 1000);
  await closed;
  clearTimeout(timer);
}
