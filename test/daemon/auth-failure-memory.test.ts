// podman 5.x: a layer lookup fails for want of credentials, containers/image
// runs the auth helper, then looks the layer up again at once. The store
// remembers failed lookups for a few seconds (so a burst of lookups does not
// hammer the registry); credentials that arrive for the repository must make
// the next lookup resolve afresh instead of answering the remembered 401.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pushTestImage } from '../../testkit/images.js';
import { startRegistry, type Registry, type RegistryAuth } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const HELPER = fileURLToPath(new URL('../../src/cli/auth-helper.js', import.meta.url));

/** Runs the installed helper binary as containers/image does: no arguments, the credentials JSON on stdin. */
function authHelper(storeRoot: string, input: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [HELPER], { env: { ...process.env, ESTARGZ_STORE_ROOT: storeRoot }, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
    child.stdin.end(input);
  });
}

async function errnoOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

for (const auth of ['htpasswd', 'token'] satisfies RegistryAuth[]) {
  describe(`credentials from the auth helper clear the failure memory (${auth} registry)`, () => {
    let reg: Registry;
    let store: RunningStore | undefined;
    let work: string;
    before(async () => {
      reg = await startRegistry({ auth });
      work = await mkdtemp(join(tmpdir(), 'estargz-authmem-'));
    });
    after(async () => {
      await store?.stop();
      await reg.stop();
      await rm(work, { recursive: true, force: true });
    });

    test('failed lookup (EIO) → helper with a wrong, then the right password → the next lookup resolves at once', async () => {
      const creds = reg.credentials!;
      const content = Buffer.from(`only with a login (${auth})\n`);
      await pushTestImage(reg.host, 'private/app', 'gzip', { layers: [[{ name: 'etc/', type: 'directory' }, { name: 'etc/secret', type: 'file', content }]] }, creds);
      const authFile = join(work, 'auth.json');
      await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } } }));
      const conv = await run(process.execPath, [CLI, 'image', 'convert', `${reg.host}/private/app:gzip`, `${reg.host}/private/app:esgz`, '--json'], { env: { ...process.env, REGISTRY_AUTH_FILE: authFile } });
      const digest = (JSON.parse(conv.stdout) as { manifests: { layers: { digest: string }[] }[] }).manifests[0]!.layers[0]!.digest;

      if (reg.token) reg.token.requests.length = 0; // the conversion's tokens do not count
      // No auth file of any kind for the daemon: credentials can only come from the helper.
      store = await startStore('', [], { HOME: work, REGISTRY_AUTH_FILE: join(work, 'none.json'), XDG_RUNTIME_DIR: work, DOCKER_CONFIG: work });
      const ref = `${reg.host}/private/app:esgz`;
      const diff = join(store.layerDir(ref, digest), 'diff');
      const NOT_RESOLVED = '"msg":"layer not resolved';

      // Without credentials: EIO; a second lookup is answered from memory (no new resolution is logged).
      assert.equal(await errnoOf(stat(diff)), 'EIO');
      assert.equal(await errnoOf(stat(diff)), 'EIO');
      assert.equal(count(store.logs(), NOT_RESOLVED), 1, 'the second lookup should come from the failure memory');

      // Wrong password: the lookup right after the helper is a fresh attempt (a second logged failure), and fails.
      const wrong = await authHelper(store.root, JSON.stringify({ [ref]: { username: creds.username, password: 'not-the-password' } }));
      assert.equal(wrong.code, 0, wrong.stderr);
      assert.equal(await errnoOf(stat(diff)), 'EIO');
      // The line comes from the store process (the keeper's child) and may follow the FUSE reply.
      await store.waitForLog(/"msg":"layer not resolved[^]*"msg":"layer not resolved/, 2000).catch(() => {});
      assert.equal(count(store.logs(), NOT_RESOLVED), 2, 'the lookup after new credentials should resolve afresh');

      // The right password: the lookup right after the helper succeeds and the file reads its bytes.
      const right = await authHelper(store.root, JSON.stringify({ [ref]: { username: creds.username, password: creds.password } }));
      assert.equal(right.code, 0, right.stderr);
      assert.ok((await stat(diff)).isDirectory());
      assert.deepEqual(await readFile(join(diff, 'etc', 'secret')), content);

      if (reg.token) {
        // Token requests: anonymous (granted without access, as Docker Hub does; not kept past the
        // registry's 401), the wrong password (refused), the right one.
        const pulls = reg.token.requests.filter((r) => r.scope === 'repository:private/app:pull').map((r) => `${r.authorized ? 'valid' : 'no/wrong'} credentials → ${r.status}`);
        assert.deepEqual(pulls, ['no/wrong credentials → 200', 'no/wrong credentials → 401', 'valid credentials → 200']);
      }
      const logs = store.logs();
      assert.equal(count(logs, NOT_RESOLVED), 2);
      assert.equal(count(logs, '"msg":"layer resolved"'), 1);
      assert.equal(count(logs, 'failed layer lookups of this repository will be tried again'), 2);
      assert.ok(!logs.includes(creds.password), 'a secret reached the log');
      assert.equal(await store.stop(), 0);
      store = undefined;
    });
  });
}
