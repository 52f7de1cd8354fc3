import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEMO_STEPS } from '../../src/demo/run.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `estargz-store demo`; `onLine` may act on each stdout line (e.g. send a signal). */
function runDemo(onLine?: (line: string, pid: number) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CLI, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) onLine?.(l, proc.pid!);
    });
    proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    proc.once('error', reject);
    proc.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Mounts, processes and the directory the demo made under its work directory: none may be left. */
async function leftovers(work: string): Promise<string[]> {
  const found: string[] = [];
  if (existsSync(work)) found.push(`directory ${work}`);
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    if (line.split(' ')[4]?.startsWith(work)) found.push(`mount ${line}`);
  }
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(work)) found.push(`process ${pid}: ${cmdline.replaceAll('\0', ' ')}`);
  }
  return found;
}

function workDir(stdout: string): string {
  const work = /^work directory: (\/\S+)$/m.exec(stdout)?.[1];
  assert.ok(work, `no work directory in:\n${stdout}`);
  return work;
}

describe('estargz-store demo', () => {
  test('runs every step, exits 0, and leaves no mount, process or directory behind', { timeout: 600_000 }, async () => {
    const r = await runDemo();
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    DEMO_STEPS.forEach((name, i) => {
      assert.ok(r.stdout.includes(`[${i + 1}/${DEMO_STEPS.length}] ${name} ...`), `step ${name} missing:\n${r.stdout}`);
    });
    assert.equal(r.stdout.match(/^ {6}done in \d+\.\d\d s/gm)?.length, DEMO_STEPS.length, r.stdout);
    assert.match(r.stdout, /\| hello from a lazily pulled eStargz image/);
    // Lazy: the pull fetches a small part of the layers; the save, all of them.
    const fetched = [...r.stdout.matchAll(/the store fetched ([\d.]+) MB .*\(([\d.]+)% of/g)].map((m) => Number(m[2]));
    assert.equal(fetched.length, 3, r.stdout);
    assert.ok(fetched[0]! < 10, `pull fetched ${fetched[0]}% of the layers`);
    assert.ok(fetched.reduce((a, b) => a + b, 0) >= 99.9, r.stdout);
    assert.match(r.stdout, /^cleaned up: /m);
    assert.deepEqual(await leftovers(workDir(r.stdout)), []);
  });

  test('Ctrl-C (SIGINT) while podman works: the demo stops, cleans up everything and exits non-zero', { timeout: 600_000 }, async () => {
    let sent = false;
    const r = await runDemo((line, pid) => {
      if (!sent && line.startsWith('[5/')) {
        sent = true;
        process.kill(pid, 'SIGINT');
      }
    });
    assert.ok(sent, r.stdout);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /interrupted by SIGINT/);
    assert.match(r.stdout, /^cleaned up: /m);
    assert.deepEqual(await leftovers(workDir(r.stdout)), []);
  });
});
