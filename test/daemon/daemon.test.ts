import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { formatStatus } from '../../src/cli/control.js';
import { ConfigError, buildConfig, loadConfig } from '../../src/daemon/config.js';
import { pushTestImage } from '../../testkit/images.js';
import { DEFAULT_USERS, freePort, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const HELPER = fileURLToPath(new URL('../../src/cli/auth-helper.js', import.meta.url));

async function cli(args: string[], env: NodeJS.ProcessEnv = process.env, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args[0] === HELPER ? args : [CLI, ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d; });
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

describe('configuration', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'estargz-config-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  test('Go stargz-store keys carry over; mirrors parse; unknown keys warn; defaults fill the rest', () => {
    const { config, warnings } = buildConfig({
      noprefetch: true,
      max_concurrency: 4,
      blob: { chunk_size: 65536, force_single_range_mode: true, valid_interval: 60 },
      resolver: { host: { 'reg.example.com': { mirrors: [{ host: 'mirror:5000', insecure: true, request_timeout_sec: 3, header: { 'x-a': 'b' } }] } } },
      cache: { max_bytes: 1024 },
      metadata_store: 'memory',
      surprise: 1,
      pool: { workers: 2, decoder: 'pako', nope: true },
    }, 'test.toml');
    assert.equal(config.noprefetch, true);
    assert.equal(config.max_concurrency, 4);
    assert.equal(config.blob.chunk_size, 65536);
    assert.equal(config.blob.max_retries, 5);
    assert.equal(config.cache.memory_bytes, 32 * 2 ** 20);
    assert.equal(config.pool.decoder, 'pako');
    assert.deepEqual(config.resolver.host, { 'reg.example.com': { mirrors: [{ host: 'mirror:5000', insecure: true, request_timeout_sec: 3, header: { 'x-a': 'b' } }] } });
    assert.deepEqual(warnings, ['test.toml: unknown key surprise (ignored)', 'test.toml: unknown key pool.nope (ignored)']);
  });

  test('main_thread_nice: -5 by default, any nice value from -20 to 19', () => {
    assert.equal(buildConfig({}, 'c.toml').config.main_thread_nice, -5);
    assert.equal(buildConfig({ main_thread_nice: 0 }, 'c.toml').config.main_thread_nice, 0);
    assert.equal(buildConfig({ main_thread_nice: -20 }, 'c.toml').config.main_thread_nice, -20);
    assert.equal(buildConfig({ main_thread_nice: 19 }, 'c.toml').config.main_thread_nice, 19);
  });

  test('fuse_busy_poll_usec: 100 by default, 0 (off) to 1000', () => {
    assert.equal(buildConfig({}, 'c.toml').config.fuse_busy_poll_usec, 100);
    assert.equal(buildConfig({ fuse_busy_poll_usec: 0 }, 'c.toml').config.fuse_busy_poll_usec, 0);
    assert.equal(buildConfig({ fuse_busy_poll_usec: 1000 }, 'c.toml').config.fuse_busy_poll_usec, 1000);
  });

  test('invalid values name the key, the value and what is allowed', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ noprefetch: 'yes' }, /noprefetch = "yes" is not valid; expected true or false/],
      [{ max_concurrency: 0 }, /max_concurrency = 0 is not valid; expected a whole number ≥ 1/],
      [{ pool: { decoder: 'gzip' } }, /pool.decoder = "gzip" is not valid; expected one of "zlib", "pako"/],
      [{ blob: { max_retries: -1 } }, /blob.max_retries = -1 is not valid/],
      [{ main_thread_nice: -21 }, /main_thread_nice = -21 is not valid; expected a whole number from -20 to 19/],
      [{ main_thread_nice: 20 }, /main_thread_nice = 20 is not valid/],
      [{ fuse_busy_poll_usec: 1001 }, /fuse_busy_poll_usec = 1001 is not valid; expected a whole number from 0 to 1000/],
      [{ fuse_busy_poll_usec: -1 }, /fuse_busy_poll_usec = -1 is not valid/],
      [{ resolver: { host: { h: { mirrors: [{ insecure: true }] } } } }, /resolver.host."h".mirrors\[0\].host must be a non-empty string/],
    ];
    for (const [doc, message] of cases) assert.throws(() => buildConfig(doc, 'c.toml'), (err) => err instanceof ConfigError && message.test(err.message), JSON.stringify(doc));
  });

  test('a missing default file is fine, a missing explicit one is an error; bad TOML is named', async () => {
    await assert.rejects(loadConfig(join(dir, 'absent.toml')), /cannot read config file .*absent.toml/);
    await writeFile(join(dir, 'bad.toml'), 'noprefetch = = true');
    await assert.rejects(loadConfig(join(dir, 'bad.toml')), /bad.toml is not valid TOML/);
  });

  test('`mount` exits with the message on a bad config; `config print` shows the effective config', async () => {
    await writeFile(join(dir, 'invalid.toml'), 'prefetch_size = "lots"\n');
    const r = await cli(['mount', '--config', join(dir, 'invalid.toml'), '--root', join(dir, 'root'), join(dir, 'mnt')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /prefetch_size = "lots" is not valid; expected a whole number ≥ 0/);
    await writeFile(join(dir, 'good.toml'), 'noprefetch = true\nunknown_thing = 1\n[[resolver.host."reg:5000".mirrors]]\nhost = "reg:5000"\ninsecure = true\n');
    const p = await cli(['config', 'print', '--config', join(dir, 'good.toml')]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /^noprefetch = true$/m);
    assert.match(p.stdout, /^max_concurrency = 2$/m);
    assert.match(p.stdout, /host = "reg:5000"/);
    assert.match(p.stderr, /unknown key unknown_thing/);
  });
});

describe('the daemon in production', () => {
  let reg: Registry;
  let store: RunningStore | undefined;
  let work: string;
  before(async () => {
    reg = await startRegistry({ auth: 'htpasswd' });
    work = await mkdtemp(join(tmpdir(), 'estargz-daemon-'));
  });
  after(async () => {
    await store?.stop();
    await reg.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('credentials from the auth helper → daemon → lazy read from an htpasswd registry; status; /metrics; sd_notify', async () => {
    const user = 'testuser';
    const password = DEFAULT_USERS[user]!;
    const creds = { username: user, password };
    await pushTestImage(reg.host, 'private/app', 'gzip', { layers: [[{ name: 'etc/', type: 'directory' }, { name: 'etc/motd', type: 'file', content: Buffer.from('private hello\n') }]] }, creds);
    const authFile = join(work, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
    const conv = await run(process.execPath, [CLI, 'image', 'convert', `${reg.host}/private/app:gzip`, `${reg.host}/private/app:esgz`, '--json'], { env: { ...process.env, REGISTRY_AUTH_FILE: authFile } });
    const digest = (JSON.parse(conv.stdout) as { manifests: { layers: { digest: string }[] }[] }).manifests[0]!.layers[0]!.digest;

    // A datagram listener standing in for systemd's notify socket (Node cannot bind unix datagram sockets).
    const notifyPath = join(work, 'notify.sock');
    const listener = spawn('python3', ['-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      `s.bind(${JSON.stringify(notifyPath)})`,
      'print("listening", flush=True)',
      's.settimeout(30)',
      'print(s.recv(4096).decode(), flush=True)',
    ].join('\n')]);
    let notified = '';
    listener.stdout.on('data', (d: Buffer) => { notified += d; });
    const listenerDone = new Promise((r) => listener.once('close', r)); // before the store starts: it may answer at once
    while (!notified.includes('listening')) await new Promise((r) => setTimeout(r, 20));

    const port = await freePort();
    // No auth file of any kind in the daemon's environment: credentials can only come from the helper.
    store = await startStore(`metrics_address = "127.0.0.1:${port}"\n`, [], { HOME: work, REGISTRY_AUTH_FILE: join(work, 'none.json'), XDG_RUNTIME_DIR: work, DOCKER_CONFIG: work, NOTIFY_SOCKET: notifyPath });
    await listenerDone;
    assert.match(notified, /READY=1/);

    const ref = `${reg.host}/private/app:esgz`;
    const helper = await cli([HELPER], { ...process.env, ESTARGZ_STORE_ROOT: store.root }, JSON.stringify({ [ref]: { username: user, password } }));
    assert.equal(helper.code, 0, helper.stderr);
    assert.equal((await stat(join(store.root, 'store.sock'))).mode & 0o777, 0o600);
    const file = join(store.layerDir(ref, digest), 'diff', 'etc', 'motd');
    assert.equal(await readFile(file, 'utf8'), 'private hello\n');

    const status = await cli(['status', '--root', store.root, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const { layers, pid, keeperPid } = JSON.parse(status.stdout) as { pid: number; keeperPid: number; layers: { ref: string; digest: string; state: string; fetchedPercent: number; size: number }[] };
    assert.equal(keeperPid, store.proc.pid);
    assert.ok(Number.isInteger(pid) && pid !== keeperPid, `the serving process ${pid} is the keeper's child`);
    const mine = layers.find((l) => l.digest === digest)!;
    assert.equal(mine.ref, ref);
    assert.ok(['lazy', 'prefetching', 'complete'].includes(mine.state), mine.state);
    assert.ok(mine.fetchedPercent > 0 && mine.size > 0);

    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const name of [
      'estargz_store_fetch_duration_seconds_bucket{le="0.1",operation="manifest"}',
      'estargz_store_registry_requests_total{operation="on_demand"}',
      'estargz_store_registry_bytes_total{operation="on_demand"}',
      'estargz_store_bytes_served_total{kind="diff"} 14',
      'estargz_store_cache_requests_total{tier="memory",result="miss"}',
      'estargz_store_fuse_op_duration_seconds_count{op="read"}',
      'estargz_store_event_loop_delay_seconds{quantile="0.99"}',
      `estargz_store_layer_size_bytes{layer="${digest.slice(7, 19)}"}`,
      'estargz_store_process_resident_memory_bytes',
    ]) assert.ok(metrics.includes(name), `/metrics lacks ${name}`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);

    const logs = store.logs();
    assert.match(logs, /credentials received from the auth helper/);
    assert.match(logs, /"msg":"layer resolved"/);
    for (const secret of [password, Buffer.from(`${user}:${password}`).toString('base64')]) {
      assert.ok(!logs.includes(secret), 'a secret reached the log');
      assert.ok(!metrics.includes(secret));
      assert.ok(!status.stdout.includes(secret));
    }
    assert.equal(await store.stop(), 0);
    store = undefined;
  });

  test('the auth helper fails clearly when no store is running', async () => {
    const r = await cli([HELPER], { ...process.env, ESTARGZ_STORE_ROOT: join(work, 'nothing-here') }, '{}');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the store at .*store.sock .*is `estargz-store mount` running with this --root\?/);
    const bad = await cli([HELPER], { ...process.env, ESTARGZ_STORE_ROOT: work }, 'not json');
    assert.match(bad.stderr, /standard input is not a JSON object/);
  });

  test('status on a terminal draws progress bars', () => {
    const text = formatStatus([{ ref: 'r/x:y', digest: `sha256:${'a'.repeat(64)}`, state: 'lazy', size: 2e6, fetchedBytes: 5e5, fetchedPercent: 25, uses: 1 }], true);
    assert.match(text, /^r\/x:y sha256:aaaaaaaaaaaa… lazy \[######\.{18}\] 25\.0% 0\.5\/2\.0 MB uses=1\n$/);
  });
});
