import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertImage, type ImageConvertOptions, type ImageConvertResult } from '../convert/image-convert.js';
import { DEFAULT_CONFIG } from '../daemon/config.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { CredentialChain, defaultAuthFiles } from '../registry/auth/credentials.js';
import type { RegistryClient } from '../registry/client.js';
import type { ResolverConfig } from '../registry/hosts.js';
import { formatReference, type ImageReference } from '../registry/reference.js';
import { privatePodman, type PrivatePodman } from '../sandbox/podman.js';
import { InterruptedError, withCleanup, type Race } from '../sandbox/interrupts.js';
import { isMounted, unmountUnder, which } from '../sandbox/processes.js';
import { formatList } from './list-file.js';
import { ReadRecorder } from './recorder.js';

export interface OptimizeOptions {
  /** Logger and metrics of the recording store this command runs in-process. */
  telemetry: Telemetry;
  /** Replaces the image's command (its entrypoint stays), like arguments after the image to `podman run`. */
  cmd?: string[];
  /** `podman run --env` values (KEY=VALUE). */
  env?: string[];
  /** `podman run --mount` values. */
  mounts?: string[];
  /** `podman run --network` (default none: a workload that needs the network says so). */
  network?: string;
  /** The workload is stopped after this long; what it read until then is used. */
  timeoutMs: number;
  /** Write the recorded list here instead of converting. */
  recordOnly?: string;
  resolver: ResolverConfig;
  /** Registries podman talks plain HTTP to (as `image convert --insecure`; localhost and 127.0.0.0/8 always are). */
  insecure: string[];
  convert: Pick<ImageConvertOptions, 'chunkSize' | 'concurrency' | 'platform' | 'onProgress'>;
  /** Progress lines (stderr in the CLI). */
  print: (line: string) => void;
  warn: (line: string) => void;
  /** The workload's own output. */
  workloadOutput: NodeJS.WritableStream;
}

export interface RecordedLayer {
  /** 1-based, as in the list file. */
  layer: number;
  /** The source image's layer digest. */
  digest: string;
  paths: string[];
}

export interface OptimizeResult {
  recorded: RecordedLayer[];
  /** The workload was stopped by the timeout. */
  timedOut: boolean;
  exitCode: number | null;
  /** The eStargz image the workload ran from (pushed by digest next to DST). */
  recordedFrom: string;
  listFile?: string;
  converted?: ImageConvertResult;
}

export class OptimizeError extends Error {}

/** Everything optimize started, undone in reverse order by cleanup(). */
interface Started {
  work: string;
  /** The recording store: served by this process, stopped with unmount then close. */
  daemon?: { stop(): Promise<void> };
  mnt?: string;
  podman?: PrivatePodman;
  recorder?: ReadRecorder;
}

/**
 * An auth.json for the private podman with the one entry it needs: the
 * credentials this command found for DST's repository (podman reads the
 * manifest and config itself; the store, in this process, finds its own).
 */
async function authJsonFor(ref: ImageReference): Promise<string | undefined> {
  const creds = await new CredentialChain(defaultAuthFiles()).lookup(ref.registry, ref.repository);
  if (!creds) return undefined;
  const entry = creds.identityToken
    ? { identitytoken: creds.identityToken, ...(creds.username && { username: creds.username }) }
    : creds.username && creds.password ? { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } : undefined;
  return entry && JSON.stringify({ auths: { [ref.registry]: entry } });
}

function isLocal(host: string): boolean {
  return /^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$/.test(host);
}

/** Stops podman (containers, images, storage) and the store; the work directory stays. */
async function release(s: Started): Promise<void> {
  s.recorder?.stop();
  const { podman, daemon } = s;
  s.podman = undefined;
  s.daemon = undefined;
  await podman?.cleanup();
  await daemon?.stop().catch(() => {}); // release goes on whatever one step says: the mounts are cleaned up below anyway
  // Whatever is still mounted (podman's overlay of an interrupted run, a store that failed to unmount) must not outlive the command.
  await unmountUnder(s.work);
  if (s.mnt && (await isMounted(s.mnt))) throw new OptimizeError(`${s.mnt} is still mounted`);
}

async function cleanup(s: Started): Promise<void> {
  await release(s);
  await rm(s.work, { recursive: true, force: true });
}

/** Waits for the workload; stops it (podman kill, then rm -f) after `timeoutMs`. */
async function runWorkload(podman: PrivatePodman, name: string, args: string[], timeoutMs: number, out: NodeJS.WritableStream): Promise<{ code: number | null; timedOut: boolean; stderr: string }> {
  const child: ChildProcess = podman.spawn(['run', '--name', name, ...args]);
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => out.write(d));
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8192);
    out.write(d);
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    podman.run(['kill', name], { timeoutMs: 30_000 }).catch(() => podman.run(['rm', '-f', name], { timeoutMs: 60_000 })).catch(() => child.kill('SIGKILL'));
  }, timeoutMs);
  try {
    return { code: await exited, timedOut, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `image optimize SRC DST`: converts SRC as it is to an eStargz image pushed
 * by digest next to DST, mounts a store of its own with reads recorded,
 * runs the image's workload with a podman of its own on that store (its
 * entrypoint and command, or `cmd`), and converts SRC again to DST with the
 * files the workload read first in the layer that provided each one (the
 * landmark prefetch then fetches them on start). Everything it starts is
 * stopped and removed at the end, on failure and on SIGINT/SIGTERM too.
 */
export async function optimizeImage(client: RegistryClient, src: ImageReference, dst: ImageReference, opts: OptimizeOptions): Promise<OptimizeResult> {
  if (process.getuid?.() !== 0) throw new OptimizeError('image optimize mounts a FUSE file system and runs podman with its own storage: run it as root');
  if (!(await which('podman'))) throw new OptimizeError('image optimize needs podman (Debian: apt-get install podman runc)');
  const started: Started = { work: await mkdtemp(join(tmpdir(), 'estargz-optimize-')) };
  return withCleanup((race, signal) => steps(client, src, dst, opts, started, race, signal), () => cleanup(started), (err) => opts.warn(`clean-up: ${err.message}`));
}

async function steps(client: RegistryClient, src: ImageReference, dst: ImageReference, opts: OptimizeOptions, started: Started, step: Race, signal: AbortSignal): Promise<OptimizeResult> {
  // 1. SRC as it is, in eStargz (layers that already are are copied), by digest in DST's repository: no tag is left behind.
  opts.print(`converting ${formatReference(src)} to a temporary eStargz image to run it from the store`);
  const tmpRef: ImageReference = { registry: dst.registry, repository: dst.repository };
  const tmp = await step(convertImage(client, src, tmpRef, { ...opts.convert, onProgress: undefined, signal }));
  const runRef = `${dst.registry}/${dst.repository}@${tmp.digest}`;
  const tmpLayers = tmp.manifests[0]!.layers;

  // 2. A store of our own in this process, so that its reads can be recorded; no background fetch: only reads are wanted.
  opts.print(`mounting a store with reads recorded`);
  const mnt = join(started.work, 'mnt');
  await mkdir(mnt);
  started.mnt = mnt;
  const { buildStore } = await import('../daemon/store.js');
  const { mountInProcess } = await import('../fs/mount.js');
  const recorder = new ReadRecorder();
  started.recorder = recorder;
  const store = await step(buildStore({
    config: { ...DEFAULT_CONFIG, no_background_fetch: true, resolver: { ...DEFAULT_CONFIG.resolver, ...opts.resolver } },
    root: join(started.work, 'store-root'),
    telemetry: opts.telemetry,
  }));
  store.fs.onRead = (_ref, digest, path) => recorder.note(digest, path);
  const mounted = await step(mountInProcess(store.fs, mnt, { telemetry: opts.telemetry, activity: store.engine.activity })).catch(async (err: unknown) => {
    await store.close();
    throw err;
  });
  started.daemon = { stop: async () => { await mounted.unmount(); await store.close(); } };

  // 3. The workload, with a podman of our own on that store.
  const insecure = [...new Set([...opts.insecure, ...(isLocal(dst.registry) ? [dst.registry] : [])])];
  const authJson = await authJsonFor(dst);
  started.podman = await privatePodman(join(started.work, 'podman'), { layerStore: mnt, insecureRegistries: insecure, ...(authJson && { authJson }) });
  const podman = started.podman;
  opts.print(`pulling ${runRef} (lazily, through the store)`);
  await step(podman.run(['pull', '-q', runRef])).catch((err: Error) => {
    throw err instanceof InterruptedError ? err : new OptimizeError(`the image could not be pulled from the store: ${err.message}`);
  });
  const name = `estargz-optimize-${process.pid}`;
  const args = [
    '--network', opts.network ?? 'none',
    ...(opts.env ?? []).flatMap((e) => ['--env', e]),
    ...(opts.mounts ?? []).flatMap((m) => ['--mount', m]),
    runRef,
    ...(opts.cmd ?? []),
  ];
  opts.print(`running the workload (timeout ${opts.timeoutMs / 1000} s): podman run ${args.join(' ')}`);
  const ran = await step(runWorkload(podman, name, args, opts.timeoutMs, opts.workloadOutput));
  recorder.stop();
  // 125: podman could not create or start the container; 126/127: the command cannot be run or is not there.
  if (!ran.timedOut && ran.code !== null && ran.code >= 125 && ran.code <= 127) {
    throw new OptimizeError(`the image does not run (podman run exited with ${ran.code}): ${ran.stderr.trim().split('\n').slice(-3).join(' | ') || 'no message'}`);
  }
  if (ran.timedOut) {
    opts.warn(`the workload did not exit within ${opts.timeoutMs / 1000} s: stopped it; using the ${recorder.size} file(s) it read until then`);
  } else if (ran.code !== 0) {
    opts.warn(`the workload exited with ${ran.code}; using the ${recorder.size} file(s) it read`);
  }
  const recorded = tmpLayers.map((l, i) => ({ layer: i + 1, digest: l.source, paths: recorder.paths(l.digest) }));
  if (recorder.size === 0) opts.warn('the workload read no file from the image: every layer gets the no-prefetch landmark');
  opts.print(`recorded ${recorder.size} file(s): ${recorded.map((l) => `layer ${l.layer} ${l.paths.length}`).join(', ')}`);

  // The mount and podman are not needed for the conversion: gone before it.
  await release(started);
  const result: OptimizeResult = { recorded, timedOut: ran.timedOut, exitCode: ran.code, recordedFrom: runRef };
  if (opts.recordOnly) {
    await writeFile(opts.recordOnly, formatList(formatReference(src), recorded.map((l) => ({ digest: l.digest, paths: l.paths }))));
    result.listFile = opts.recordOnly;
  } else {
    // 4. SRC again, each layer with its own files first.
    opts.print(`converting ${formatReference(src)} to ${formatReference(dst)} with the recorded files first`);
    result.converted = await step(convertImage(client, src, dst, {
      ...opts.convert,
      signal,
      prioritizedFilesByLayer: ({ index }) => recorded[index]?.paths ?? [],
    }));
  }
  return result;
}
