import { join } from 'node:path';
import { Command } from 'commander';
import { stringify } from 'smol-toml';
import { ConfigError, loadConfig } from '../daemon/config.js';
import { DEFAULT_ROOT, SOCKET_NAME, controlRequest } from '../daemon/control-protocol.js';
import type { LayerStatus } from '../layers/status.js';
import { runAuthHelper } from './send-credentials.js';

function socketOf(opts: { root: string; socket?: string }): string {
  return opts.socket ?? join(opts.root, SOCKET_NAME);
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

export { ConfigError, runAuthHelper };
