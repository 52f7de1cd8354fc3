// Starts a real Distribution 2.8 registry (Debian package `docker-registry`)
// on 127.0.0.1 for tests, with no auth, htpasswd auth or token auth, or as a
// pull-through cache of another registry (`proxyOf`).
//
// The registry runs under a tiny `sh` watchdog that holds a pipe from this
// process on stdin: when this process dies for any reason (including SIGKILL,
// where no 'exit' handler runs), the pipe closes and the watchdog terminates the
// registry. stop() uses the same path (closing the pipe), and an 'exit' handler
// SIGKILLs whatever is still alive as a last resort.

import { spawn, execFile as execFileCb, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { access, constants, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { startTokenServer, type TokenServer } from './token-server.js';

const execFile = promisify(execFileCb);

export type RegistryAuth = 'none' | 'htpasswd' | 'token';

export interface RegistryOptions {
  auth?: RegistryAuth;
  /** Accounts for htpasswd auth (default {testuser: 'testpassword'}); for token auth they live in the token server. */
  users?: Record<string, string>;
  /** Token server to trust for auth 'token'; when omitted one is started (with `users`) and stopped with the registry. */
  token?: TokenServer;
  /**
   * Run as a pull-through cache of this registry (Distribution's proxy mode,
   * `proxy: remoteurl:`), e.g. "http://127.0.0.1:5000". Such a registry
   * refuses pushes. Distribution 2.8 answers a GET of a blob it does not hold
   * yet with 200 and the whole blob, whatever the Range (it streams it from
   * upstream while a second upstream GET stores it); once stored, ranges and
   * multi-ranges are served (206).
   */
  proxyOf?: string;
}

export interface Registry {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  auth: RegistryAuth;
  /** The first configured account, handy for tests that need one valid login (absent for auth 'none'). */
  credentials?: { username: string; password: string };
  /** The token server the registry trusts (auth 'token' only). */
  token?: TokenServer;
  /** Root of the filesystem storage driver. */
  dataDir: string;
  /** Registry stdout+stderr. */
  logFile: string;
  stop(): Promise<void>;
  logLines(): Promise<string[]>;
}

export const DEFAULT_USERS: Readonly<Record<string, string>> = { testuser: 'testpassword' };

const REGISTRY_HINT = 'install the Debian package docker-registry: apt-get install docker-registry';
const HTPASSWD_HINT = 'install the Debian package apache2-utils: apt-get install apache2-utils';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/**
 * Watchdog: $0 = registry binary, $1 = temp dir. The registry is killed when
 * our stdin (a pipe from node) reaches EOF, i.e. when node closes it or dies;
 * after such a shutdown the temp dir is removed too (node may be gone). A
 * registry that exits on its own keeps its dir so the log can be read.
 * Background jobs get /dev/null as stdin, hence the fd 3 copy.
 */
const WATCHDOG = [
  'exec 3<&0',
  '"$0" serve "$1/config.yml" </dev/null &',
  'reg=$!',
  'echo "$reg" > "$1/registry.pid"',
  '( read -r _ <&3; : > "$1/.eof"; kill -TERM "$reg" 2>/dev/null ) &',
  'watch=$!',
  'wait "$reg"; rc=$?',
  'kill "$watch" 2>/dev/null',
  'if [ -e "$1/.eof" ]; then rm -rf "$1"; fi',
  'exit "$rc"',
].join('\n');

/** Registries not yet stopped, killed synchronously if the process exits without stop(). */
const live = new Map<ChildProcess, { dir: string; pidFile: string }>();
let exitHookInstalled = false;

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const bin = await findRegistryBinary();
  const auth = opts.auth ?? 'none';
  const users = opts.users ?? { ...DEFAULT_USERS };
  const ownToken = auth === 'token' && opts.token === undefined ? await startTokenServer({ users }) : undefined;
  const token = opts.token ?? ownToken;
  let registry: Registry;
  try {
    registry = await startWithRetry(bin, auth, users, token, opts.proxyOf);
  } catch (err) {
    await ownToken?.stop();
    throw err;
  }
  if (ownToken) {
    const stopRegistryOnly = registry.stop;
    let stopping: Promise<void> | undefined;
    registry.stop = () => (stopping ??= stopRegistryOnly().then(() => ownToken.stop()));
  }
  return registry;
}

async function startWithRetry(bin: string, auth: RegistryAuth, users: Record<string, string>, token: TokenServer | undefined, proxyOf: string | undefined): Promise<Registry> {
  try {
    return await startOnce(bin, auth, users, token, proxyOf);
  } catch (err) {
    // The free-port probe races with other processes; one retry covers it.
    if (!(err instanceof AddressInUseError)) throw err;
    return await startOnce(bin, auth, users, token, proxyOf);
  }
}

class AddressInUseError extends Error {}

async function startOnce(
  bin: string,
  auth: RegistryAuth,
  users: Record<string, string>,
  token: TokenServer | undefined,
  proxyOf: string | undefined,
): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'estargz-registry-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'registry.log');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  try {
    const authYaml = await authConfig(auth, dir, users, token);
    await writeFile(join(dir, 'config.yml'), registryConfig(host, dataDir, authYaml + proxyConfig(proxyOf)));
    const child = await spawnRegistry(bin, dir, logFile);
    const registry = makeHandle(child, dir, host, logFile, dataDir, auth, users, token);
    try {
      await waitUntilUp(registry.url, child, logFile);
    } catch (err) {
      await registry.stop();
      throw err;
    }
    return registry;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function makeHandle(
  child: ChildProcess,
  dir: string,
  host: string,
  logFile: string,
  dataDir: string,
  auth: RegistryAuth,
  users: Record<string, string>,
  token: TokenServer | undefined,
): Registry {
  let stopping: Promise<void> | undefined;
  const first = Object.entries(users)[0];
  const registry: Registry = {
    host,
    url: `http://${host}`,
    auth,
    dataDir,
    logFile,
    stop: () => (stopping ??= stopRegistry(child, dir)),
    logLines: async () => (await readLog(logFile)).split('\n').filter((l) => l.length > 0),
  };
  if (auth !== 'none' && first) registry.credentials = { username: first[0], password: first[1] };
  if (token) registry.token = token;
  return registry;
}

/** `docker-registry` on PATH (or $REGISTRY_BIN), with a clear hint when it is missing. */
async function findRegistryBinary(): Promise<string> {
  const explicit = process.env['REGISTRY_BIN'];
  const onPath = (process.env['PATH'] ?? '').split(delimiter).filter((d) => d.length > 0).map((d) => join(d, 'docker-registry'));
  const candidates = explicit ? [explicit] : [...onPath, '/usr/bin/docker-registry'];
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  throw new Error(`docker-registry binary not found (${explicit ? `REGISTRY_BIN=${explicit}` : 'PATH'}); ${REGISTRY_HINT}`);
}

/** Asks the kernel for a free port; the registry binds it a moment later (see the retry in startRegistry). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (addr === null || typeof addr === 'string') throw new Error('freePort: no TCP address');
  return addr.port;
}

function registryConfig(host: string, dataDir: string, authYaml: string): string {
  // JSON strings are valid YAML double-quoted scalars, which keeps odd temp paths safe.
  const q = JSON.stringify;
  return [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(dataDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(host)}`,
    // Fixed rather than random: upload `_state` tokens are signed with it, and the log stays free of the
    // "No HTTP secret provided - generated random secret" warning.
    '  secret: estargz-store-test-secret',
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
    authYaml,
  ].join('\n') + '\n';
}

function proxyConfig(remoteUrl: string | undefined): string {
  if (remoteUrl === undefined) return '';
  return ['', 'proxy:', `  remoteurl: ${JSON.stringify(remoteUrl)}`].join('\n');
}

async function authConfig(
  auth: RegistryAuth,
  dir: string,
  users: Record<string, string>,
  token: TokenServer | undefined,
): Promise<string> {
  const q = JSON.stringify;
  if (auth === 'none') return '';
  if (auth === 'htpasswd') {
    const path = join(dir, 'htpasswd');
    await writeFile(path, await htpasswdFile(users));
    return ['auth:', '  htpasswd:', '    realm: estargz-test-registry', `    path: ${q(path)}`].join('\n');
  }
  if (!token) throw new Error('startRegistry: auth "token" needs a token server');
  return [
    'auth:',
    '  token:',
    `    realm: ${q(token.realm)}`,
    `    service: ${q(token.service)}`,
    `    issuer: ${q(token.issuer)}`,
    `    rootcertbundle: ${q(token.certPath)}`,
  ].join('\n');
}

/** bcrypt entries from `htpasswd -Bbn` (apache2-utils); Distribution accepts only bcrypt. */
async function htpasswdFile(users: Record<string, string>): Promise<string> {
  const lines: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    try {
      const { stdout } = await execFile('htpasswd', ['-Bbn', user, password]);
      lines.push(stdout.trim());
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error(`htpasswd not found; ${HTPASSWD_HINT}`);
      throw new Error(`htpasswd failed: ${e.stderr ?? e.message}`);
    }
  }
  return lines.join('\n') + '\n';
}

async function spawnRegistry(bin: string, dir: string, logFile: string): Promise<ChildProcess> {
  const log = await open(logFile, 'a');
  const pidFile = join(dir, 'registry.pid');
  let child: ChildProcess;
  try {
    child = spawn('/bin/sh', ['-c', WATCHDOG, bin, dir], {
      stdio: ['pipe', log.fd, log.fd],
    });
  } finally {
    await log.close();
  }
  // Neither the child nor its stdin pipe should keep a test process alive that forgot stop().
  child.unref();
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin?.on('error', () => {}); // EPIPE after the watchdog exits is expected
  live.set(child, { dir, pidFile });
  installExitHook();
  return child;
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [child, info] of live) killSync(child, info.pidFile);
    for (const info of live.values()) rmSync(info.dir, { recursive: true, force: true });
  });
}

/** Only synchronous work is possible in an 'exit' handler. */
function killSync(child: ChildProcess, pidFile: string): void {
  const regPid = readPidSync(pidFile);
  for (const pid of [regPid, child.pid]) {
    if (pid === undefined) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function readPidSync(pidFile: string): number | undefined {
  try {
    const text = readFileSync(pidFile, 'utf8');
    const pid = Number.parseInt(text, 10);
    return Number.isFinite(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function waitUntilUp(url: string, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = await logTail(logFile);
      if (/address already in use/i.test(tail)) throw new AddressInUseError(`registry port in use:\n${tail}`);
      throw new Error(`docker-registry exited during startup (code ${child.exitCode ?? child.signalCode}); log tail:\n${tail}`);
    }
    if (await answersV2(url)) return;
    await sleep(50);
  }
  throw new Error(`docker-registry did not answer GET ${url}/v2/ within ${START_TIMEOUT_MS / 1000} s; log tail:\n${await logTail(logFile)}`);
}

async function answersV2(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200 || res.status === 401;
  } catch {
    return false;
  }
}

async function stopRegistry(child: ChildProcess, dir: string): Promise<void> {
  const info = live.get(child);
  const exited = waitForExit(child, STOP_TIMEOUT_MS);
  child.stdin?.end(); // EOF → the watchdog sends SIGTERM to the registry
  if (!(await exited)) {
    killSync(child, info?.pidFile ?? join(dir, 'registry.pid'));
    await waitForExit(child, STOP_TIMEOUT_MS);
  }
  live.delete(child);
  await rm(dir, { recursive: true, force: true });
}

/** Resolves true when the child exits within `ms`, false otherwise. */
function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function readLog(logFile: string): Promise<string> {
  try {
    return await readFile(logFile, 'utf8');
  } catch {
    return '';
  }
}

async function logTail(logFile: string, lines = 30): Promise<string> {
  return (await readLog(logFile)).split('\n').slice(-lines - 1).join('\n');
}

// ------------------------------------------------------------------ seeding helpers
// A deliberately tiny registry client for putting test content into a registry
// (and for the helpers' own tests); it is not the client under test.

export interface Credentials {
  username: string;
  password: string;
}

export function basicAuth(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** Parses the parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge. */
export function parseChallenge(header: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) {
    if (m[1] !== undefined && m[2] !== undefined) out[m[1]] = m[2];
  }
  return out;
}

/** GET realm?service&scope (Basic auth when creds are given) → the bearer token. */
export async function fetchToken(challenge: string, creds: Credentials | undefined): Promise<string> {
  const { realm, service, scope } = parseChallenge(challenge);
  if (!realm) throw new Error(`no realm in challenge: ${challenge}`);
  const u = new URL(realm);
  if (service) u.searchParams.set('service', service);
  if (scope) u.searchParams.set('scope', scope);
  const res = await fetch(u, creds ? { headers: { authorization: basicAuth(creds) } } : {});
  if (res.status !== 200) throw new Error(`token server ${u.origin} answered ${res.status}: ${await res.text()}`);
  const body = (await res.json()) as { token?: string; access_token?: string };
  const token = body.token ?? body.access_token;
  if (!token) throw new Error('token server answered without a token');
  return token;
}

/**
 * fetch() that answers one 401 challenge: Basic directly, Bearer through the
 * token realm. The request body must be re-sendable (a Buffer or string).
 */
export async function registryFetch(url: string, init: RequestInit = {}, creds?: Credentials): Promise<Response> {
  const first = await fetch(url, init);
  if (first.status !== 401 || creds === undefined) return first;
  await first.arrayBuffer();
  const challenge = first.headers.get('www-authenticate') ?? '';
  const headers = new Headers(init.headers);
  headers.set('authorization', /^basic/i.test(challenge) ? basicAuth(creds) : `Bearer ${await fetchToken(challenge, creds)}`);
  return fetch(url, { ...init, headers });
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Monolithic upload: POST /v2/<repo>/blobs/uploads/ then PUT <Location>&digest=. Returns the digest. */
export async function pushBlob(baseUrl: string, repo: string, data: Uint8Array, creds?: Credentials): Promise<string> {
  const digest = sha256Digest(data);
  const started = await registryFetch(`${baseUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' }, creds);
  if (started.status !== 202) throw new Error(`blob upload start: ${started.status} ${await started.text()}`);
  await started.arrayBuffer();
  const location = new URL(started.headers.get('location') ?? '', baseUrl);
  location.searchParams.set('digest', digest);
  const init: RequestInit = { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } };
  const put = await registryFetch(location.href, init, creds);
  if (put.status !== 201) throw new Error(`blob upload finish: ${put.status} ${await put.text()}`);
  await put.arrayBuffer();
  return digest;
}

/** PUT /v2/<repo>/manifests/<reference>. Returns the manifest digest. */
export async function putManifest(
  baseUrl: string,
  repo: string,
  reference: string,
  manifest: string | Uint8Array,
  mediaType = 'application/vnd.oci.image.manifest.v1+json',
  creds?: Credentials,
): Promise<string> {
  const body = typeof manifest === 'string' ? Buffer.from(manifest) : manifest;
  const init: RequestInit = { method: 'PUT', body, headers: { 'content-type': mediaType } };
  const res = await registryFetch(`${baseUrl}/v2/${repo}/manifests/${reference}`, init, creds);
  if (res.status !== 201) throw new Error(`manifest put: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
  return sha256Digest(body);
}

/**
 * Pushes an OCI image of one gzip layer (the blob, an amd64 config naming
 * its diff_id, the manifest with the layer's annotations) as repo:tag.
 * Returns the layer's digest.
 */
export async function pushOneLayerImage(
  baseUrl: string,
  repo: string,
  tag: string,
  layer: { blob: Uint8Array; diffID: string; annotations?: Record<string, string>; digest?: string },
): Promise<string> {
  const digest = await pushBlob(baseUrl, repo, layer.blob);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.diffID] } }));
  const configDigest = await pushBlob(baseUrl, repo, config);
  await putManifest(baseUrl, repo, tag, JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: layer.blob.length, ...(layer.annotations && { annotations: layer.annotations }) }],
  }));
  return digest;
}
