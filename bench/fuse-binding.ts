/**
 * The floor of each FUSE binding, side by side in one run: a do-nothing
 * filesystem (names, modes and sizes of a synthetic layer-like tree held in
 * memory; file content is zeros; every request answered at once) served from
 * this process's JS thread by
 *   - the new binding (native/ + src/fuse/: /dev/fuse directly, inode-based,
 *     READDIRPLUS, no OPEN, 1 MiB requests), mounted read-write as the store
 *     will mount it, with the same 60 s timeouts;
 *   - the same without busy polling (SessionOptions.busyPollUs 0; the store
 *     polls for fuse_busy_poll_usec after a batch answered at once);
 *   - the new binding mounted read-only (MS_RDONLY), which also stops the
 *     kernel invalidating atime after each read and listing (one GETATTR per
 *     file re-read on a writable mount).
 * Every pass mounts each anew and runs, in order: W6 `find -printf` (cold
 * kernel caches), warm stat (µs per stat of 2,000 files, 3 rounds), one
 * GETATTR round trip (statx with AT_STATX_FORCE_SYNC, which always asks the
 * filesystem: what a stat costs once the kernel's copy is stale, e.g. the
 * atime after a read on a writable mount), W3 cold read of every file, W5 warm re-read, then `dd bs=1M` of the 256 MiB file
 * with its page cache dropped (so every byte crosses the binding). Passes
 * alternate the order of the bindings. Whatever the store takes above these
 * figures is the store's own work.
 *
 *   node dist/bench/fuse-binding.js [--passes N] [--no-write]
 */
import { parseArgs } from 'node:util';
import { mkdtemp, rm, mkdir, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FuseSession } from '../src/fuse/session.js';
import { DEFAULT_CONFIG } from '../src/daemon/config.js';
import { ROOT_ID, fuseError } from '../src/fuse/protocol.js';
import type { DirEntryPlus, Entry, FuseOperations } from '../src/fuse/types.js';
import { ddSeconds, statLoop, timeBash, q } from './lib/store-workloads.js';
import { describeMachine, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { formatSummary, summarize, MiB } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/fuse-binding.js [--passes N] [--no-write]
  --passes N   mounts of each binding (default 5)
  --no-write   print only: leave bench/results/fuse-binding.md alone`;

// ---------------------------------------------------------------------------
// The synthetic tree: ~6,740 entries like an image layer

interface TreeNode {
  id: number;
  parent: number;
  name: string;
  type: 'dir' | 'file' | 'symlink';
  mode: number;
  size: number;
  link?: string;
  children?: number[];
}

interface Tree {
  nodes: TreeNode[];
  /** Paths (relative to the root) of the small files. */
  files: string[];
  big: string;
  entries: number;
  fileBytes: number;
}

const BIG_SIZE = 256 * MiB;

function makeTree(): Tree {
  const nodes: TreeNode[] = [];
  const add = (parent: number, name: string, type: TreeNode['type'], mode: number, size: number, link?: string): TreeNode => {
    const n: TreeNode = { id: nodes.length + 1, parent, name, type, mode, size, ...(link !== undefined ? { link } : {}), ...(type === 'dir' ? { children: [] } : {}) };
    nodes.push(n);
    if (parent) nodes[parent - 1]!.children!.push(n.id);
    return n;
  };
  const path = (n: TreeNode): string => (n.parent === 0 ? '' : `${path(nodes[n.parent - 1]!)}/${n.name}`);
  add(0, '', 'dir', 0o755, 4096);
  const dirs: TreeNode[] = [];
  for (let a = 0; a < 25; a++) {
    const top = add(ROOT_ID, `lib${a}`, 'dir', 0o755, 4096);
    for (let b = 0; b < 20; b++) dirs.push(add(top.id, `pkg${b}`, 'dir', 0o755, 4096));
  }
  const files: string[] = [];
  let seed = 12345;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  let fileBytes = 0;
  for (let i = 0; i < 4629; i++) {
    const d = dirs[i % dirs.length]!;
    const size = Math.floor(200 + rand() * rand() * 40_000);
    const f = add(d.id, `mod${i}.py`, 'file', i % 9 === 0 ? 0o755 : 0o644, size);
    files.push(path(f).slice(1));
    fileBytes += size;
  }
  for (let i = 0; i < 1585; i++) {
    const d = dirs[(i * 7) % dirs.length]!;
    add(d.id, `alias${i}`, 'symlink', 0o777, 12, `../mod${i}.py`);
  }
  const big = add(ROOT_ID, 'big.bin', 'file', 0o644, BIG_SIZE);
  return { nodes, files, big: path(big).slice(1), entries: nodes.length - 1, fileBytes: fileBytes + BIG_SIZE };
}

const S_IF = { dir: 0o040000, file: 0o100000, symlink: 0o120000 } as const;
const ZEROS = Buffer.alloc(MiB);
const TTL = 60;

interface Mounted {
  unmount(): Promise<void>;
  /** Requests the filesystem answered so far, per operation. */
  ops(): Record<string, number>;
}

// ---------------------------------------------------------------------------
// The floor on the new binding

function floorOps(tree: Tree): FuseOperations {
  const entry = (n: TreeNode): Entry => ({
    nodeid: n.id,
    attr: { ino: n.id, mode: S_IF[n.type] | n.mode, size: n.size, nlink: 1, mtime: 1_700_000_000, atime: 1_700_000_000, ctime: 1_700_000_000 },
    entryTimeout: TTL,
    attrTimeout: TTL,
  });
  const node = (id: number): TreeNode => {
    const n = tree.nodes[id - 1];
    if (!n) throw fuseError('ESTALE');
    return n;
  };
  return {
    lookup: (parent, name) => {
      for (const id of node(parent).children ?? []) if (tree.nodes[id - 1]!.name === name) return entry(tree.nodes[id - 1]!);
      return null;
    },
    getattr: (id) => ({ attr: entry(node(id)).attr, attrTimeout: TTL }),
    readdirplus: (id, offset) => {
      const n = node(id);
      if (!n.children) throw fuseError('ENOTDIR');
      const out: DirEntryPlus[] = [];
      for (let i = offset; i < n.children.length; i++) {
        const c = tree.nodes[n.children[i]! - 1]!;
        out.push({ name: c.name, offset: i + 1, entry: entry(c) });
      }
      return out;
    },
    read: (id, offset, size) => {
      const n = node(id);
      return ZEROS.subarray(0, Math.max(0, Math.min(size, n.size - offset)));
    },
    readlink: (id) => node(id).link ?? '',
  };
}

async function mountBinding(tree: Tree, mnt: string, readOnly: boolean, busyPollUs: number): Promise<Mounted> {
  const s = await FuseSession.mount(floorOps(tree), { mountpoint: mnt, subtype: 'floor', readOnly }, { entryTimeout: TTL, attrTimeout: TTL, busyPollUs });
  return { unmount: () => s.close(), ops: () => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.opCounts())) out[k.toLowerCase()] = v;
    return out;
  } };
}

// ---------------------------------------------------------------------------

type Impl = 'binding' | 'binding-no-poll' | 'binding-ro' | 'tmpfs';
const IMPLS: Impl[] = ['binding', 'binding-no-poll', 'binding-ro', 'tmpfs'];

/**
 * The same tree on tmpfs (sparse files), no FUSE at all: what the kernel,
 * find, cat and dd cost by themselves on this machine.
 */
async function mountTmpfs(tree: Tree, mnt: string): Promise<Mounted> {
  const paths: string[] = [''];
  for (const n of tree.nodes.slice(1)) {
    const p = `${paths[n.parent - 1]}/${n.name}`;
    paths.push(p);
    if (n.type === 'dir') await mkdir(mnt + p);
    else if (n.type === 'symlink') await symlink(n.link ?? '', mnt + p);
    else await truncate(await writeFile(mnt + p, '').then(() => mnt + p), n.size);
  }
  return { unmount: async () => {}, ops: () => ({}) };
}

interface Sample {
  impl: Impl;
  pass: number;
  findSeconds: number;
  findWarmSeconds: number;
  statUs: number;
  statPyUs: number;
  getattrUs: number;
  readColdSeconds: number;
  readWarmSeconds: number;
  ddSeconds: number;
  /** Requests per workload, per operation. */
  requests: Record<string, Record<string, number>>;
}

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) > 0) out[k] = v - (a[k] ?? 0);
  return out;
}

/**
 * µs per stat(2) in a tight loop of a small process (python's os.stat), so
 * the figure is the kernel's and the binding's, not Node's promise and
 * thread-pool overhead (which statLoop, as the e2e bench, includes).
 */
async function pyStatLoop(dir: string, files: readonly string[], passes: number): Promise<number> {
  const script = `import os,sys,time
paths=[os.path.join(sys.argv[1],l) for l in sys.stdin.read().split('\\n') if l]
for p in paths[:50]: os.stat(p)
t=time.perf_counter()
for _ in range(${passes}):
  for p in paths: os.stat(p)
print((time.perf_counter()-t)*1e6/(${passes}*len(paths)))`;
  return pythonNumber(script, dir, files, 'python3 stat loop');
}

/** Runs a python script with `dir` as its argument and `files` on stdin; its stdout is one number. */
async function pythonNumber(script: string, dir: string, files: readonly string[], what: string): Promise<number> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', script, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`${what} exited ${code}`))));
    child.stdin.end(files.join('\n'));
  });
}

/**
 * µs per statx(AT_STATX_FORCE_SYNC) in a python loop (ctypes): each call is
 * one GETATTR through the binding, whatever the kernel has cached.
 */
async function pyGetattrLoop(dir: string, files: readonly string[]): Promise<number> {
  const script = `import ctypes,os,sys,time
libc=ctypes.CDLL(None,use_errno=True)
buf=ctypes.create_string_buffer(256)
paths=[os.path.join(sys.argv[1],l).encode() for l in sys.stdin.read().split('\\n') if l]
def one(p):
  if libc.statx(-100,p,0x2000,0x7ff,buf)!=0: raise OSError(ctypes.get_errno(),p)
for p in paths[:50]: one(p)
t=time.perf_counter()
for p in paths: one(p)
print((time.perf_counter()-t)*1e6/len(paths))`;
  return pythonNumber(script, dir, files, 'python3 statx loop');
}

async function onePass(tree: Tree, impl: Impl, pass: number): Promise<Sample> {
  const base = await mkdtemp(join(impl === 'tmpfs' ? '/dev/shm' : tmpdir(), 'estargz-bench-fuse-binding-'));
  const mnt = join(base, 'mnt');
  await mkdir(mnt);
  const m = impl === 'tmpfs' ? await mountTmpfs(tree, mnt) : await mountBinding(tree, mnt, impl === 'binding-ro', impl === 'binding-no-poll' ? 0 : DEFAULT_CONFIG.fuse_busy_poll_usec);
  const requests: Record<string, Record<string, number>> = {};
  let last = m.ops();
  const phase = <T>(name: string, v: T): T => {
    const now = m.ops();
    requests[name] = delta(last, now);
    last = now;
    return v;
  };
  try {
    const findSeconds = phase('find', (await timeBash(`find ${q(mnt)} -printf '%p %s %m\\n' > /dev/null`)).seconds);
    const findWarmSeconds = phase('findWarm', (await timeBash(`find ${q(mnt)} -printf '%p %s %m\\n' > /dev/null`)).seconds);
    const { perCallUs: statUs } = phase('stat', await statLoop(mnt, tree.files.slice(0, 2000), 3));
    const statPyUs = phase('statPy', await pyStatLoop(mnt, tree.files.slice(0, 2000), 20));
    const getattrUs = phase('getattr', await pyGetattrLoop(mnt, tree.files.slice(0, 1000)));
    const readColdSeconds = phase('readCold', (await timeBash(`cd ${q(mnt)} && find . -type f ! -name big.bin -exec cat {} + > /dev/null`)).seconds);
    const readWarmSeconds = phase('readWarm', (await timeBash(`cd ${q(mnt)} && find . -type f ! -name big.bin -exec cat {} + > /dev/null`)).seconds);
    const big = join(mnt, tree.big);
    await timeBash(`dd if=${q(big)} of=/dev/null bs=1M status=none`);
    await timeBash(`dd if=${q(big)} iflag=nocache count=0 status=none`);
    phase('ddPrime', 0);
    const dd = phase('dd', await ddSeconds(big));
    return { impl, pass, findSeconds, findWarmSeconds, statUs, statPyUs, getattrUs, readColdSeconds, readWarmSeconds, ddSeconds: dd, requests };
  } finally {
    await m.unmount();
    await rm(base, { recursive: true, force: true }).catch(() => {});
  }
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({ options: { passes: { type: 'string', default: '5' }, 'no-write': { type: 'boolean', default: false }, help: { type: 'boolean', default: false } } });
  if (args.help) { process.stdout.write(USAGE + '\n'); return; }
  const passes = Number(args.passes);
  const machine = machineInfo();
  const tree = makeTree();
  process.stderr.write(`tree: ${tree.entries} entries, ${tree.files.length} small files, ${BIG_SIZE / MiB} MiB file; ${passes} passes\n`);
  const samples: Sample[] = [];
  for (let pass = 0; pass < passes; pass++) {
    const order = pass % 2 === 0 ? IMPLS : [...IMPLS].reverse();
    for (const impl of order) {
      const s = await onePass(tree, impl, pass);
      samples.push(s);
      process.stderr.write(`  requests: ${JSON.stringify(s.requests)}\n`);
      process.stderr.write(`pass ${pass} ${impl}: find ${s.findSeconds.toFixed(3)} s (warm ${s.findWarmSeconds.toFixed(3)} s), stat ${s.statUs.toFixed(1)} µs (python ${s.statPyUs.toFixed(1)} µs, GETATTR round trip ${s.getattrUs.toFixed(1)} µs), read cold ${s.readColdSeconds.toFixed(3)} s, warm ${s.readWarmSeconds.toFixed(3)} s, dd ${(BIG_SIZE / s.ddSeconds / 1e6).toFixed(0)} MB/s\n`);
    }
  }
  const of = (impl: Impl, f: (s: Sample) => number) => summarize(samples.filter((s) => s.impl === impl).map(f));
  const rows: [string, string, (s: Sample) => number, number][] = [
    [`W6 find -printf, ${tree.entries} entries, cold (s)`, '≤ 0.06', (s) => s.findSeconds, 3],
    ['the same find again, warm (s)', '', (s) => s.findWarmSeconds, 3],
    ['warm stat, Node fs.promises.stat loop (µs)', '≤ 10', (s) => s.statUs, 1],
    ['warm stat, python os.stat loop (µs)', '≤ 10', (s) => s.statPyUs, 1],
    ['one GETATTR round trip, python statx FORCE_SYNC loop (µs)', '', (s) => s.getattrUs, 1],
    [`W3 cold read, ${tree.files.length} files (s)`, '', (s) => s.readColdSeconds, 3],
    [`W5 warm re-read, ${tree.files.length} files (s)`, '≤ 0.10', (s) => s.readWarmSeconds, 3],
    [`dd bs=1M, ${BIG_SIZE / MiB} MiB, page cache dropped (MB/s)`, '≥ 2000', (s) => BIG_SIZE / s.ddSeconds / 1e6, 0],
  ];
  const table = markdownTable(
    ['workload (do-nothing FS)', ...IMPLS, 'target (issue 14)'],
    rows.map(([name, target, f, dec]) => [name, ...IMPLS.map((i) => formatSummary(of(i, f), dec)), target]),
  );
  const md = [
    '## FUSE binding floor: the binding read-write (with and without busy polling) and read-only, and tmpfs',
    '',
    describeMachine(machine),
    '',
    `Median (min–max) of ${passes} passes; each pass mounts each binding anew. \`binding\` is read-write as the store will mount it, busy polling ${DEFAULT_CONFIG.fuse_busy_poll_usec} µs after a batch answered at once (config \`fuse_busy_poll_usec\`); \`binding-no-poll\` is the same with busy polling off; \`binding-ro\` is MS_RDONLY (no atime invalidation), busy polling as \`binding\`.`,
    '',
    table,
  ].join('\n');
  process.stdout.write(md + '\n');
  if (!args['no-write']) {
    const path = await writeResult('fuse-binding', { machine, passes, tree: { entries: tree.entries, files: tree.files.length, fileBytes: tree.fileBytes, bigBytes: BIG_SIZE }, samples });
    process.stderr.write(`wrote ${path} and ${await writeTables('fuse-binding', md, path)}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
