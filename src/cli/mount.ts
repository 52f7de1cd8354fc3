import { Command } from 'commander';
import { ConfigError, loadConfig } from '../daemon/config.js';
import { startDaemon } from '../daemon/daemon.js';
import { DEFAULT_ROOT } from '../daemon/control-protocol.js';
import { installLastResortHandlers } from '../daemon/last-resort.js';
import { LOG_LEVELS, createLogger } from '../log/logger.js';

export { DEFAULT_ROOT };

export function mountCommand(): Command {
  return new Command('mount')
    .description('mount the additional layer store at MOUNTPOINT and serve until SIGINT/SIGTERM (this process keeps the mount; the store runs in a child process that `restart` replaces)')
    .argument('<mountpoint>', 'where to mount (containers/storage: additionallayerstores = ["MOUNTPOINT:ref"])')
    .option('--config <file>', 'config file (default /etc/estargz-store/config.toml; a missing default is fine)')
    .option('--root <dir>', 'state directory: disk cache, control socket', DEFAULT_ROOT)
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal')
    .action(async (mountpoint: string, opts: { config?: string; root: string; logLevel?: string }) => {
      // Read here to refuse a bad file at once; each store process reads it again (a restart applies an edited file).
      const { config, warnings, source } = await loadConfig(opts.config);
      const level = opts.logLevel ?? (process.env.ESTARGZ_LOG_LEVEL ? undefined : config.log_level);
      const levels = LOG_LEVELS.filter((l) => l !== 'silent');
      if (level && !(levels as string[]).includes(level)) throw new ConfigError(`--log-level ${level}: expected ${levels.join(', ')}`);
      // The keeper's logger: the store processes it starts create their own.
      const logger = createLogger(level ?? process.env.ESTARGZ_LOG_LEVEL);
      for (const w of warnings) logger.warn(w);
      logger.info({ config: source, root: opts.root }, 'starting');
      installLastResortHandlers({ log: logger });
      // Handlers first: a signal that arrives while mounting must still unmount, not kill the process.
      let signalled: (signal: string) => void = () => {};
      const received = new Promise<string>((resolve) => { signalled = resolve; });
      process.once('SIGINT', () => signalled('SIGINT'));
      process.once('SIGTERM', () => signalled('SIGTERM'));
      const daemon = await startDaemon({ root: opts.root, mountpoint, ...(opts.config && { configPath: opts.config }), ...(opts.logLevel && { logLevel: opts.logLevel }), log: logger });
      const signal = await received;
      logger.info({ signal }, 'signal received');
      await daemon.stop().catch((err: Error) => logger.error({ err: err.message }, 'stop failed'));
      logger.flush();
      // The store processes are gone and the socket closed; exit now rather than wait for stragglers.
      setTimeout(() => process.exit(0), 100).unref();
    });
}
