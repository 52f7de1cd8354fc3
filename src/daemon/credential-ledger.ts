import type { Credentials, RuntimeCredentials } from '../registry/auth/credentials.js';
import type { RepoRef } from '../registry/client.js';
import { parseReference } from '../registry/reference.js';
import { addCredentials } from './control.js';

/** One repository's credentials as the auth helper gave them, and when. */
export interface LedgerEntry {
  ref: string;
  credentials: Credentials;
  at: number;
}

/**
 * The credentials the auth helper handed to the store, kept so that a
 * successor process (restart, crash) starts with them: they live in memory
 * only, and podman gives them once per pull. They travel in the state the
 * keeper holds for the mount (never to disk, never to a log).
 */
export class CredentialLedger {
  private readonly byRepo = new Map<string, LedgerEntry>();

  constructor(private readonly store: RuntimeCredentials) {}

  /** Stores credentials from the auth helper (keyed by each reference's repository); returns the repositories. */
  add(creds: Record<string, Credentials>, at = Date.now()): RepoRef[] {
    const repos = addCredentials(this.store, creds);
    Object.keys(creds).forEach((ref, i) => {
      const repo = repos[i]!;
      this.byRepo.set(`${repo.registry}/${repo.repository}`, { ref, credentials: creds[ref]!, at });
    });
    return repos;
  }

  get size(): number {
    return this.byRepo.size;
  }

  export(): LedgerEntry[] {
    return [...this.byRepo.values()];
  }

  /** A predecessor's entries; for a repository known to both, the newer wins. */
  merge(entries: readonly LedgerEntry[]): void {
    for (const e of entries) {
      const repo = repoKey(e.ref);
      const mine = repo === undefined ? undefined : this.byRepo.get(repo);
      if (mine && mine.at >= e.at) continue;
      this.add({ [e.ref]: e.credentials }, e.at);
    }
  }
}

function repoKey(ref: string): string | undefined {
  try {
    const p = parseReference(ref);
    return `${p.registry}/${p.repository}`;
  } catch {
    return undefined;
  }
}
