import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DOCKER_HUB } from '../reference.js';

/** Credentials for one registry (or repository): a password, or an identity (refresh) token. */
export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
}

/** Where credentials come from; the first source with an answer wins. */
export interface CredentialSource {
  readonly name: string;
  lookup(registry: string, repository: string): Promise<Credentials | undefined>;
}

/**
 * Credentials handed in while the daemon runs (podman ≥ 5.2's auth helper
 * sends `{"<ref>": {"username","password","identityToken"}}`). Kept in memory
 * only, keyed by the reference's registry/repository.
 */
export class RuntimeCredentials implements CredentialSource {
  readonly name = 'runtime';
  private readonly byRepo = new Map<string, Credentials>();

  set(registry: string, repository: string, creds: Credentials): void {
    this.byRepo.set(`${registry}/${repository}`, creds);
  }

  async lookup(registry: string, repository: string): Promise<Credentials | undefined> {
    return this.byRepo.get(`${registry}/${repository}`);
  }
}

interface AuthFileEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

/**
 * A podman auth.json or Docker config.json. Keys are `host`, `host/namespace…`
 * (podman: most specific first) or Docker Hub's `https://index.docker.io/v1/`.
 * Read on each lookup (they are small and change when users log in), so the
 * daemon sees `podman login` without a restart.
 */
export class AuthFile implements CredentialSource {
  constructor(readonly path: string) {}
  get name(): string {
    return this.path;
  }

  async lookup(registry: string, repository: string): Promise<Credentials | undefined> {
    let doc: { auths?: Record<string, AuthFileEntry> };
    try {
      doc = JSON.parse(await readFile(this.path, 'utf8')) as typeof doc;
    } catch {
      return undefined; // absent or unreadable files are simply not a source
    }
    const auths = doc.auths ?? {};
    const hostKeys = registry === DOCKER_HUB
      ? [DOCKER_HUB, 'https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io']
      : [registry, `https://${registry}`, `http://${registry}`];
    // Most specific first: host/a/b/c, host/a/b, host/a, then the host keys.
    const parts = repository.split('/');
    const candidates: string[] = [];
    for (let n = parts.length; n > 0; n--) candidates.push(`${registry}/${parts.slice(0, n).join('/')}`);
    candidates.push(...hostKeys);
    for (const key of candidates) {
      const entry = auths[key] ?? auths[`${key}/`];
      const creds = entry && decodeEntry(entry);
      if (creds) return creds;
    }
    return undefined;
  }
}

function decodeEntry(e: AuthFileEntry): Credentials | undefined {
  if (e.identitytoken) return { identityToken: e.identitytoken, ...(e.username && { username: e.username }) };
  if (e.auth) {
    const text = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon > 0) return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (e.username && e.password) return { username: e.username, password: e.password };
  return undefined;
}

/** The auth files podman and Docker use, in the order they are consulted. */
export function defaultAuthFiles(env: NodeJS.ProcessEnv = process.env): AuthFile[] {
  const paths: string[] = [];
  if (env.REGISTRY_AUTH_FILE) paths.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  paths.push('/run/containers/0/auth.json');
  if (env.DOCKER_CONFIG) paths.push(join(env.DOCKER_CONFIG, 'config.json'));
  paths.push(join(env.HOME ?? homedir(), '.docker', 'config.json'));
  return [...new Set(paths)].map((p) => new AuthFile(p));
}

/** Asks each source in turn. */
export class CredentialChain implements CredentialSource {
  readonly name = 'chain';
  constructor(readonly sources: CredentialSource[]) {}
  async lookup(registry: string, repository: string): Promise<Credentials | undefined> {
    for (const s of this.sources) {
      const c = await s.lookup(registry, repository);
      if (c) return c;
    }
    return undefined;
  }
}
