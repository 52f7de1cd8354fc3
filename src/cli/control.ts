import { join } from 'node:path';
import { Command } from 'commander';
import { stringify } from 'smol-toml';
import { ConfigError, loadConfig } from '../daemon/config.js';
import { DEFAULT_ROOT, RESTART_TIMEOUT_MS, SOCKET_NAME, controlRequest } from '../daemon/control-protocol.js';
import type { ServingStatus } from '../daemon/daemon.js';
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

/** The processes line of `status`: which process serves, its keeper, and what happened to them. */
export function formatServing(s: Partial<ServingStatus>): string {
  return `serving pid ${s.pid ?? '?'} (keeper pid ${s.keeperPid ?? '?'}; restarts ${s.restarts ?? 0}, failed restarts ${s.failedRestarts ?? 0}, crashes ${s.crashes ?? 0})\n`;
}

export function controlCommands(): Command[] {
  const authHelper = new Command('auth-helper')
    .description('pass registry credentials from containers/image (stdin JSON) to the running store')
    .option('--root <dir>', 'the store\'s state directory', process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT)
    .option('--socket <path>', 'control socket (default <root>/store.sock)')
    .action(async (opts: { root: string; socket?: string }) => runAuthHelper(socketOf(opts)));

  const status = new Command('status')
    .description('show the serving process and each layer the store serves: state, size, bytes fetched')
    .option('--root <dir>', 'the store\'s state directory', process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT)
    .option('--socket <path>', 'control socket (default <root>/store.sock)')
    .option('--json', 'print JSON')
    .action(async (opts: { root: string; socket?: string; json?: boolean }) => {
      const res = await controlRequest(socketOf(opts), { op: 'status' });
      if (!res.ok) throw new Error(`status: ${res.error}`);
      const { ok: _ok, ...body } = res;
      void _ok;
      const json = opts.json || !process.stdout.isTTY;
      process.stdout.write(json ? JSON.stringify(body) + '\n' : formatServing(body as Partial<ServingStatus>) + formatStatus(body.layers as LayerStatus[], true));
    });

  const restart = new Command('restart')
    .description('replace the store process with one started from the code installed now, without unmounting (what `systemctl reload` runs)')
    .option('--root <dir>', 'the store\'s state directory', process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT)
    .option('--socket <path>', 'control socket (default <root>/store.sock)')
    .option('--json', 'print JSON')
    .action(async (opts: { root: string; socket?: string; json?: boolean }) => {
      const res = await controlRequest(socketOf(opts), { op: 'restart' }, RESTART_TIMEOUT_MS);
      if (!res.ok) throw new Error(`restart: ${res.error}`);
      const { ok: _ok, ...body } = res;
      void _ok;
      process.stdout.write(opts.json ? JSON.stringify(body) + '\n' : `restarted: pid ${String(body.pid)} serves (was ${String(body.previousPid)}; serving after ${String(body.readyMs)} ms, old one gone after ${String(body.totalMs)} ms)\n`);
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
  return [authHelper, status, restart, config];
}

export { ConfigError, runAuthHelper };
