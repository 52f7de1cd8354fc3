/**
 * Node flags the keeper starts each store process with (before any flags
 * the keeper itself was started with, so an operator's own flags win). Both
 * trade a little speed nobody measured for memory on a node that also runs
 * containers (bench/footprint.ts measures them):
 *
 *  - `--max-semi-space-size=2`: V8's young generation grows to 3 × 16 MiB
 *    by default; the store's short-lived objects (FUSE requests, chunk
 *    views) die young at 2 MiB too, and each isolate (main thread and every
 *    decode worker) keeps a smaller heap.
 *  - `--liftoff-only`: undici parses HTTP with llhttp compiled to
 *    WebAssembly; V8 optimizes that one large function in the background
 *    after the first requests, which costs ~30 MiB of compiler memory at
 *    the first pull (the process's peak) and keeps part of it. The baseline
 *    code parses a few response headers per fetched range just as well.
 */
export const STORE_PROCESS_FLAGS: readonly string[] = ['--max-semi-space-size=2', '--liftoff-only'];

/** The flags to start a store process with: ESTARGZ_STORE_NODE_FLAGS (space-separated, may be empty) replaces the defaults. */
export function storeProcessFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const given = env.ESTARGZ_STORE_NODE_FLAGS;
  return given === undefined ? [...STORE_PROCESS_FLAGS] : given.split(/\s+/).filter(Boolean);
}
