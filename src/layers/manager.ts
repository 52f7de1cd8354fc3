import type { LayerStatus } from './status.js';
import { wrapLayerError } from './errors.js';
import type { LayerKey } from './key.js';
import type { ResolvedLayer } from './resolver.js';

/** What the manager needs of an opened layer's engine side: its progress for `status`, and closing at release. */
export interface LayerHandle {
  readonly size: number;
  readonly state: LayerStatus['state'];
  readonly fetchedBytes: number;
  readonly failureReason: string | undefined;
  close(): Promise<void>;
}

export interface OpenedLayer {
  layer: ResolvedLayer;
  handle: LayerHandle;
}

/** Opens the layer a key names (the resolver: manifest, TOC, engine layer). Bounded in time by the opener. */
export interface LayerOpener {
  open(key: LayerKey): Promise<OpenedLayer>;
}

export interface LayerManagerOptions {
  /** A failed resolution is answered from memory for this long, then tried again. */
  failureTtlMs: number;
}

interface Entry {
  key: LayerKey;
  opening: Promise<OpenedLayer>;
  value: Promise<ResolvedLayer>;
  settled?: { ok: true; at: number; opened: OpenedLayer } | { ok: false; at: number; error: string };
  uses: number;
  /** Credentials for its repository arrived since it started: a failure is tried again at the next lookup, not answered from memory. */
  retry?: boolean;
}

/**
 * The store's one registry of served layers, keyed by LayerKey: each key is
 * resolved once (concurrent lookups share it), use counts follow
 * containers/storage's `use` and `rmdir`, a failure is remembered briefly
 * so that a burst of lookups does not hammer the registry, and `status`
 * lists them all. Every failure leaves as a LayerError.
 */
export class LayerManager {
  private readonly entries = new Map<string, Entry>();
  /** Failed resolutions stay visible in `status` this long, then are forgotten (podman 4.x looks up every layer of every pull). */
  static readonly FAILURE_RETENTION_MS = 10 * 60_000;
  private lastPrune = Date.now();

  constructor(private readonly opener: LayerOpener, private readonly opts: LayerManagerOptions) {}

  private pruneFailures(): void {
    const now = Date.now();
    if (now - this.lastPrune < 30_000) return;
    this.lastPrune = now;
    for (const [text, e] of this.entries) {
      if (e.settled && !e.settled.ok && e.uses === 0 && now - e.settled.at > LayerManager.FAILURE_RETENTION_MS) this.entries.delete(text);
    }
  }

  /** The served layer for a key: resolved once, shared by concurrent lookups; a recent failure is answered from memory. */
  resolve(key: LayerKey): Promise<ResolvedLayer> {
    this.pruneFailures();
    const text = key.toString();
    const hit = this.entries.get(text);
    if (hit && !(hit.settled && !hit.settled.ok && (hit.retry || Date.now() - hit.settled.at > this.opts.failureTtlMs))) return hit.value;
    const opening = this.open(key);
    const entry: Entry = { key, opening, value: opening.then((o) => o.layer), uses: hit?.uses ?? 0 };
    opening.then(
      (opened) => { entry.settled = { ok: true, at: Date.now(), opened }; },
      (err: Error) => { entry.settled = { ok: false, at: Date.now(), error: err.message }; },
    );
    // Every caller gets entry.value's failure; a lookup that nobody awaits any more must not make it an unhandled rejection.
    entry.value.catch(() => {});
    this.entries.set(text, entry);
    return entry.value;
  }

  private async open(key: LayerKey): Promise<OpenedLayer> {
    try {
      return await this.opener.open(key);
    } catch (err) {
      throw wrapLayerError('resolution', key, err);
    }
  }

  /**
   * New credentials for a repository (from the auth helper): its failed
   * resolutions, and those still running (they may have started without the
   * credentials), are not answered from memory; the next lookup resolves
   * afresh. podman runs the helper and looks the layer up again at once.
   * Returns how many entries that concerns.
   */
  forgetFailures(registry: string, repository: string): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (!e.key.inRepository(registry, repository) || e.settled?.ok) continue;
      e.retry = true;
      n++;
    }
    return n;
  }

  /** containers/storage created `<layer>/use`: one more user. */
  use(key: LayerKey): void {
    const e = this.entries.get(key.toString());
    if (e) e.uses++;
  }

  /**
   * containers/storage removed the layer directory: one user less. At zero
   * the layer is dropped and its memory released (the disk cache stays);
   * returns whether that happened.
   */
  async release(key: LayerKey): Promise<boolean> {
    const text = key.toString();
    const e = this.entries.get(text);
    if (!e) return false;
    e.uses = Math.max(0, e.uses - 1);
    if (e.uses > 0) return false;
    this.entries.delete(text);
    await closeEntry(e);
    return true;
  }

  /** A snapshot of every layer, without waiting for resolutions in progress. */
  status(): LayerStatus[] {
    return [...this.entries.values()].map((e) => {
      const { refText: ref, digest } = e.key;
      if (!e.settled) return { ref, digest, state: 'resolving', uses: e.uses };
      if (!e.settled.ok) return { ref, digest, state: 'failed', reason: e.settled.error, uses: e.uses };
      const { layer, handle } = e.settled.opened;
      const size = handle.size;
      return {
        ref, digest, keyedBy: layer.keyedBy, state: handle.state, size, uses: e.uses,
        fetchedBytes: handle.fetchedBytes,
        fetchedPercent: size > 0 ? Math.round((handle.fetchedBytes / size) * 1000) / 10 : 100,
        ...(handle.failureReason && { reason: handle.failureReason }),
      };
    });
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map(closeEntry));
  }
}

/** Closes an entry's engine layer once its resolution settled (a failed one has none). */
async function closeEntry(e: Entry): Promise<void> {
  const opened = await e.opening.catch(() => undefined); // a failed resolution was reported to its lookups and has no layer to close
  await opened?.handle.close();
}
