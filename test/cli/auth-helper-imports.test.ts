// containers/image runs `estargz-store-auth-helper` on every pull, so the
// helper must load only what it needs: node built-ins and the control
// protocol, not the daemon's graph (HTTP client, logger, metrics, worker
// pool). This asserts which modules a real run loads, not how long it takes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HELPER = fileURLToPath(new URL('../../src/cli/auth-helper.js', import.meta.url));
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const HEAVY = ['undici', 'pino', 'prom-client', 'piscina', 'commander', 'lru-cache', 'smol-toml'];

// Loader hooks (run on their own thread) record every ES module URL resolved;
// at exit the preload adds the CommonJS files (the npm packages above are CommonJS).
const HOOKS = `
import { appendFileSync } from 'node:fs';
let out;
export function initialize(data) { out = data.out; }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(out, r.url + '\\n');
  return r;
}
`;
const PRELOAD = (hooks: string, out: string): string => `
import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(${JSON.stringify(hooks)}, { data: { out: ${JSON.stringify(out)} } });
const require = createRequire(import.meta.url);
process.on('exit', () => appendFileSync(${JSON.stringify(out)}, Object.keys(require.cache).map((f) => 'cjs:' + f + '\\n').join('')));
`;

/** A stand-in for the daemon's control socket: records each request line and answers ok. */
async function fakeStore(path: string): Promise<{ server: Server; requests: unknown[] }> {
  const requests: unknown[] = [];
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      requests.push(JSON.parse(buf.slice(0, nl)));
      sock.end(JSON.stringify({ ok: true, count: 1 }) + '\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, requests };
}

describe('the auth helper loads a small module graph', () => {
  let dir: string;
  let store: Awaited<ReturnType<typeof fakeStore>>;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'estargz-helper-imports-'));
    store = await fakeStore(join(dir, 'store.sock'));
    await writeFile(join(dir, 'hooks.mjs'), HOOKS);
  });
  after(async () => {
    store.server.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `args` under the recording preload; returns the exit code and the modules loaded. */
  async function loaded(name: string, args: string[], input: string, root = dir): Promise<{ code: number; stderr: string; modules: string[] }> {
    const out = join(dir, `${name}.modules`);
    await writeFile(out, '');
    const preload = join(dir, `${name}-preload.mjs`);
    await writeFile(preload, PRELOAD(pathToFileURL(join(dir, 'hooks.mjs')).href, out));
    const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', pathToFileURL(preload).href, ...args], { env: { ...process.env, ESTARGZ_STORE_ROOT: root }, stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => { err += d; });
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c ?? -1, stderr: err }));
      child.stdin.end(input);
    });
    return { code, stderr, modules: (await readFile(out, 'utf8')).split('\n').filter(Boolean) };
  }

  const creds = { 'reg.example:5000/private/app:1': { username: 'u', password: 'p' } };

  test('the helper sends the request and loads no npm package and only its own three project modules', async () => {
    const before = store.requests.length;
    const r = await loaded('helper', [HELPER], JSON.stringify(creds));
    assert.equal(r.code, 0, r.stderr);
    // The protocol as the daemon reads it: one add-credentials line with the JSON as given.
    assert.deepEqual(store.requests.slice(before), [{ op: 'add-credentials', credentials: creds }]);
    const project = r.modules.filter((m) => m.includes('/dist/')).map((m) => m.slice(m.indexOf('/dist/') + 6)).sort();
    assert.deepEqual([...new Set(project)], ['src/cli/auth-helper.js', 'src/cli/send-credentials.js', 'src/daemon/control-protocol.js']);
    const packages = r.modules.filter((m) => m.includes('/node_modules/'));
    assert.deepEqual(packages, [], `the helper loaded npm packages:\n${packages.join('\n')}`);
    for (const m of r.modules) assert.match(m, /^(node:|file:\/\/|cjs:)/, m);
  });

  test('the recording sees heavy packages where they are loaded (`estargz-store auth-helper`, the full CLI\'s help)', async () => {
    const before = store.requests.length;
    const r = await loaded('cli', [CLI, 'auth-helper', '--root', dir], JSON.stringify(creds));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(store.requests.slice(before), [{ op: 'add-credentials', credentials: creds }]);
    assert.ok(r.modules.join('\n').includes('/node_modules/commander/'), 'commander not seen in the CLI\'s modules');
    // The CLI loads a command's modules on use; help without a command loads every command's.
    const all = await loaded('cli-help', [CLI, '--help'], '');
    assert.equal(all.code, 0, all.stderr);
    const text = all.modules.join('\n');
    // prom-client is not among them: only a store process creates metrics (StoreMetrics), and help builds none.
    for (const pkg of ['undici', 'pino', 'commander']) assert.ok(text.includes(`/node_modules/${pkg}/`), `${pkg} not seen in the full CLI's modules`);
  });

  test('a helper that cannot reach the store fails clearly and still loads none of them', async () => {
    const r = await loaded('nostore', [HELPER], '{}', join(dir, 'absent'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the store at .*absent\/store.sock/);
    const text = r.modules.join('\n');
    for (const pkg of HEAVY) assert.ok(!text.includes(`/node_modules/${pkg}/`), `the helper loaded ${pkg}`);
  });
});
