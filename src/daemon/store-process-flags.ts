/**
 * Node flags the keeper starts each store process with (before any flags
 * the keeper itself was started with, so an operator's own flags win). Both
 * trade memory on a node that also runs containers for no speed that
 * bench/footprint.ts could see (bench/results/footprint-breakdown.md):
 *
 *  - `--max-semi-space-size=4`: V8's young generation grows to 3 × 16 MiB
 *    by default; the store's short-lived objects (FUSE requests, chunk
 *    views) die young at a few MiB too, and each isolate (main thread and
 *    every decode worker) keeps a smaller heap. 1 MiB saved most (2.5 MiB
 *    idle, 16 MiB after reading a whole layer, W3) but the main thread then
 *    scavenged 9× as often: its GC time in one cold session (trace-gc, main
 *    isolate) was 595 ms for bookworm-like W3 and 275 ms for python W3,
 *    against 271 / 107 ms at 4 MiB and 171 / 102 ms at V8's default, and
 *    every pause is time no FUSE request is answered. 4 MiB keeps most of
 *    the speed at a few MiB.
 *  - `--liftoff-only`: undici parses HTTP with llhttp compiled to
 *    WebAssembly; V8 optimizes that one large function in the background
 *    after the first requests, which costs ~30 MiB of compiler memory at
 *    the first pull (the process's peak) and keeps part of it. The baseline
 *    code parses a few response headers per fetched range just as well.
 */
export const STORE_PROCESS_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--liftoff-only'];

/** The flags to start a store process with: ESTARGZ_STORE_NODE_FLAGS (space-separated, may be empty) replaces the defaults. */
export function storeProcessFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const given = env.ESTARGZ_STORE_NODE_FLAGS;
  return given === undefined ? [...STORE_PROCESS_FLAGS] : given.split(/\s+/).filter(Boolean);
}

/**
 * glibc malloc settings for the store process (where the environment does
 * not set them already): most of its memory is ArrayBuffers that glibc
 * allocates (fetched ranges, decoded chunks, copies for the workers).
 *
 *  - `MALLOC_ARENA_MAX=2`: each thread that allocates (main, decode
 *    workers, the hashing worker, libuv and V8 helper threads) otherwise
 *    gets an arena of its own, up to 8 per core, and buffers freed into one
 *    arena are not reused by the others.
 *  - `MALLOC_MMAP_THRESHOLD_=131072`: a fixed threshold. glibc otherwise
 *    raises it to the largest block freed (up to 32 MiB), after which
 *    megabyte buffers come from the arenas and stay resident once freed.
 *
 * Together: 3 MiB less idle, 10–11 MiB less after W3, the same store CPU.
 */
export const STORE_PROCESS_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' };

/** The environment to start a store process with: `env` plus STORE_PROCESS_ENV for what `env` does not set. */
export function storeProcessEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...STORE_PROCESS_ENV, ...env };
}
