/**
 * The store process: what the keeper (`estargz-store mount`, src/daemon/daemon.ts)
 * runs as its child to serve the mount, and runs again from the code
 * installed now on `restart`, or after this process died. It builds the
 * store (configuration read anew, engine, resolver, tree), listens on its
 * own control socket (the keeper passes `status` and credentials on to the
 * one serving) and on the metrics address, and hands the keeper its state:
 * the node-id table (so a successor answers for every id the kernel holds)
 * and the credentials the auth helper gave (memory only, given once per
 * pull). Run as `node server.js <json ServerArgs>` with fd 3, fd 4 and IPC
 * from the keeper (src/fuse/keeper-server.ts).
 */
import { rmSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { serveKept } from '../fuse/keeper-server.js';
import type { ToServer } from '../fuse/keeper-protocol.js';
import { handlerErrorReporter, mountAnswers, storeOperations } from '../fs/mount.js';
import type { NodeTableJson } from '../fs/node-ids.js';
import { createLogger } from '../log/logger.js';
import { createTelemetry } from '../metrics/telemetry.js';
import { loadConfig } from './config.js';
import { startControlServer, storeControlHandler } from './control.js';
import { SERVER_SOCKET_DIR, serverSocketPath } from './control-protocol.js';
import { CredentialLedger, type LedgerEntry } from './credential-ledger.js';
import { installLastResortHandlers } from './last-resort.js';
import { MetricsListener } from './metrics-server.js';
import { buildStore } from './store.js';
import { setMainThreadNice } from './main-thread-priority.js';

/** What the keeper passes (argv[2], JSON). */
export interface ServerArgs {
  /** Config file as given to `mount` (undefined: the default path, which may be missing). */
  config?: string;
  root: string;
  logLevel?: string;
}

/** The state a successor starts from. */
interface StoreState {
  version: 1;
  nodes: NodeTableJson;
  /** Layer directories served (not released): resolved again at once by a successor. */
  served: string[];
  credentials: LedgerEntry[];
}

/** How long a restart's successor resolves the served layers before it takes requests. */
const RESOLVE_BEFORE_SERVING_MS = 10_000;

/** Waits for `work`, at most `ms`; never rejects (resolveAgain logs its own failures). */
async function boundedWait(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); });
  try {
    await Promise.race([work.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const isState = (s: unknown): s is StoreState => typeof s === 'object' && s !== null && (s as StoreState).version === 1;

/** Sockets of store processes that are gone (killed: nothing removed them). */
async function removeDeadSockets(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(/^server-(\d+)\.sock$/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch {
      await rm(join(dir, name), { force: true });
    }
  }
}

/** Runs the store process: its telemetry is created here and handed to every part it builds. */
function main(): void {
  const log = createLogger(process.env.ESTARGZ_LOG_LEVEL);
  const telemetry = createTelemetry(log);
  installLastResortHandlers(telemetry);
  // The keeper decides when the store stops (it unmounts; this process then
  // reads ENODEV and exits): a Ctrl-C that reaches the whole process group, or
  // a SIGTERM sent to every process of the service, must not end a store
  // process first, which the keeper would take for a crash.
  process.on('SIGINT', () => log.debug('SIGINT ignored: the keeper stops the store'));
  process.on('SIGTERM', () => log.debug('SIGTERM ignored: the keeper stops the store'));

  const args = JSON.parse(process.argv[2] ?? '{}') as ServerArgs;

  void serveKept(async (ctx) => {
    const { config } = await loadConfig(args.config);
    const level = args.logLevel ?? (process.env.ESTARGZ_LOG_LEVEL ? undefined : config.log_level);
    if (level) log.level = level;
    log.info({ generation: ctx.generation, reason: ctx.reason }, 'store process starting');
    // Before the engine starts its workers: they leave the raised priority to this thread alone.
    setMainThreadNice(config.main_thread_nice, log);
    const store = await buildStore({ config, root: args.root, telemetry });
    const { fs, engine, client, resolver } = store;
    const ledger = new CredentialLedger(client.runtimeCredentials);
    const state = (): StoreState => ({ version: 1, nodes: fs.exportNodeTable(), served: fs.servedLayerKeys(), credentials: ledger.export() });
    const publish = (): void => ctx.publishState(state());
    fs.onStateChange = publish;

    const sockets = join(args.root, SERVER_SOCKET_DIR);
    await mkdir(sockets, { recursive: true, mode: 0o700 });
    await removeDeadSockets(sockets);
    const socket = serverSocketPath(args.root, process.pid);
    await startControlServer(socket, storeControlHandler({
      log,
      credentials: client.runtimeCredentials,
      addCredentials: (creds) => {
        const repos = ledger.add(creds);
        publish();
        return repos;
      },
      status: async () => resolver.status(),
      flush: async () => { await engine.disk?.flush(); },
      // A lookup that failed for want of these credentials must not be answered from memory.
      credentialsAdded: (repo) => {
        const layers = resolver.forgetFailures(repo.registry, repo.repository);
        if (layers > 0) log.info({ registry: repo.registry, repository: repo.repository, layers }, 'new credentials: failed layer lookups of this repository will be tried again');
      },
    }));
    process.on('exit', () => rmSync(socket, { force: true }));

    if (config.metrics_address) {
      const metrics = new MetricsListener(config.metrics_address, telemetry.metrics, () => mountAnswers(ctx.mountpoint));
      if (ctx.reason === 'mount') await metrics.bindNow();
      else metrics.bindWhenFree((msg, extra) => log.warn(extra, msg), (waitedMs) => log.debug({ address: config.metrics_address, waitedMs }, 'metrics listener bound'));
      // Handing over: the successor binds the address as soon as this lets go.
      process.on('message', (m: ToServer) => { if (m.t === 'detach') metrics.close(); });
    }

    return {
      ops: storeOperations(fs, { telemetry, activity: engine.activity }),
      session: { readdirplus: true, busyPollUs: config.fuse_busy_poll_usec, onError: handlerErrorReporter(telemetry) },
      exportState: state,
      importState: (s) => {
        if (!isState(s)) {
          log.warn('the state handed over is not one this version reads; starting without it (node ids the kernel holds answer ESTALE)');
          return;
        }
        // Credentials first: resolving the served layers again may need them.
        ledger.merge(s.credentials);
        fs.mergeNodeTable(s.nodes);
        log.info({ slots: s.nodes.slots.length, layers: s.served.length, credentials: s.credentials.length }, 'took over the node-id table, the served layers and credentials');
        const resolving = fs.resolveAgain(s.served);
        // A planned restart: the predecessor serves until this one reads
        // requests, so resolve first and no reader waits for a manifest and a
        // TOC (bounded: a registry that is slow now only delays those layers'
        // first reads). After a crash nobody serves: take requests at once.
        if (ctx.reason !== 'restart') return;
        return boundedWait(resolving, RESOLVE_BEFORE_SERVING_MS);
      },
    };
  }).catch((err: unknown) => {
    log.fatal({ err: (err as Error)?.stack ?? String(err) }, 'the store process cannot run');
    log.flush();
    process.exitCode = 1;
  });
}

main();
