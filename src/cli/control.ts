import { join } from 'node:path';
import { Command } from 'commander';
import { stringify } from 'smol-toml';
import { ConfigError, loadConfig } from '../daemon/config.js';
import { SOCKET_NAME, controlRequest } from '../daemon/control.js';
import type { LayerStatus } from '../engine/resolver.js';
import type { Credentials } from '../registry/auth/credentials.js';
import { DEFAULT_ROOT } from './mount.js';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

function socketOf(opts: { root: string; socket?: string }): string {
  return opts.socket ?? join(opts.root, SOCKET_NAME);
}

/**
 * The program registries.conf names in `additional-layer-store-auth-helper`
 * (podman ≥ 5.2): containers/image runs it with the pull's credentials as
 * JSON on stdin, `{"<ref>": {"username","password","identityToken"}}`; it
 * hands them to the daemon, which keeps them in memory only.
 */
export async function runAuthHelper(socket: string): Promise<void> {
  const text = await readStdin();
  let creds: Record<string, Credentials>;
  try {
    creds = JSON.parse(text) as Record<string, Credentials>;
    if (typeof creds !== 'object' || creds === null || Array.isArray(creds)) throw new Error('not an object');
  } catch {
    throw new Error('auth-helper: standard input is not a JSON object of {"<image ref>": {"username","password","identityToken"}}');
  }
  const res = await controlRequest(socket, { op: 'add-credentials', credentials: creds });
  if (!res.ok) throw new Error(`auth-helper: the store refused the credentials: ${res.error}`);
}

function bar(percent: number, width = 24): string {
  const full = Math.round((Math.min(100, Math.max(0, percent)) / 100) * width);
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

function mb(n: number | undefined): string {
  return n === undefined ? '?' : (n / 1e6).toFixed(1);
}

export function formatStatus(layers: LayerStatus[], tty: boolean): string {
  if (!layers.length) return 'no layers resolved\n';
  return layers.map((l) => {
    const head = `${l.ref} ${l.digest.slice(0, 19)}…`;
    const progress = l.fetchedPercent !== undefined
      ? `${tty ? `${bar(l.fetchedPercent)} ` : ''}${l.fetchedPercent.toFixed(1)}% ${mb(l.fetchedBytes)}/${mb(l.size)} MB`
      : '';
    return `${head} ${l.state}${progress ? ` ${progress}` : ''}${l.uses ? ` uses=${l.uses}` : ''}${l.reason ? `\n    ${l.reason}` : ''}`;
  }).join('\n') + '\n';
}

export function controlCommands(): Command[] {
  const authHelper = new Command('auth-helper')
    .description('pass registry credentials from containers/image (stdin JSON) to the running store')
    .option('--root <dir>', 'the store\'s state directory', process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT)
    .option('--socket <path>', 'control socket (default <root>/store.sock)')
    .action(async (opts: { root: string; socket?: string }) => runAuthHelper(socketOf(opts)));

  const status = new Command('status')
    .description('show each layer the store serves: state, size, bytes fetched')
    .option('--root <dir>', 'the store\'s state directory', process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT)
    .option('--socket <path>', 'control socket (default <root>/store.sock)')
    .option('--json', 'print JSON')
    .action(async (opts: { root: string; socket?: string; json?: boolean }) => {
      const res = await controlRequest(socketOf(opts), { op: 'status' });
      if (!res.ok) throw new Error(`status: ${res.error}`);
      const layers = res.layers as LayerStatus[];
      const json = opts.json || !process.stdout.isTTY;
      process.stdout.write(json ? JSON.stringify(layers) + '\n' : formatStatus(layers, true));
    });

  const config = new Command('config').description('configuration');
  config
    .command('print')
    .description('print the effective configuration (defaults merged with the file) as TOML')
    .option('--config <file>', 'config file (default /etc/estargz-store/config.toml)')
    .action(async (opts: { config?: string }) => {
      const { config: effective, warnings, source } = await loadConfig(opts.config);
      for (const w of warnings) process.stderr.write(`estargz-store: warning: ${w}\n`);
      process.stdout.write(`# effective configuration (from ${source})\n${stringify(effective)}\n`);
    });
  return [authHelper, status, config];
}

export { ConfigError };
