import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { benchCacheDir } from './layer-input.js';
import { repoRoot } from './machine.js';
import { runQuiet } from './proc.js';

/**
 * Builds the reference tool (test/interop/go/src/esgzref, the reference
 * estargz.Build from Debian's golang-github-containerd-stargz-snapshotter-dev)
 * in GOPATH mode, as test/interop does. Go's build cache makes a rebuild on
 * every run cost well under a second once warm, and it never runs a stale binary.
 * Returns the binary, or the reason it could not be built.
 */
export async function buildEsgzref(): Promise<{ path: string } | { error: string }> {
  const root = repoRoot();
  const gopath = join(root, 'test', 'interop', 'go');
  if (!existsSync(join(gopath, 'src', 'esgzref', 'main.go'))) return { error: `no ${join(gopath, 'src', 'esgzref', 'main.go')}` };
  const dir = benchCacheDir();
  await mkdir(dir, { recursive: true });
  const out = join(dir, 'esgzref');
  try {
    await runQuiet('go', ['build', '-o', out, 'esgzref'], {
      env: { ...process.env, GO111MODULE: 'off', GOPATH: `${gopath}:/usr/share/gocode`, GOFLAGS: '', GOCACHE: join(dir, 'gocache') },
    });
  } catch (err) {
    return { error: `go build esgzref failed (needs Debian's golang-go and golang-github-containerd-stargz-snapshotter-dev): ${(err as Error).message}` };
  }
  return { path: out };
}
