#!/usr/bin/env node
import type { Command } from 'commander';
import { isEstargzError } from '../estargz/errors.js';
import { isRegistryError } from '../registry/errors.js';

/**
 * Command groups, loaded on use: `layer convert` should not pay (in start-up
 * time and memory) for the daemon, the FUSE binding and the HTTP client that
 * other commands need. Help without a command loads them all.
 */
const GROUPS: { names: readonly string[]; load: () => Promise<Command[]> }[] = [
  { names: ['layer'], load: async () => [(await import('./layer.js')).layerCommand()] },
  { names: ['image'], load: async () => [(await import('./image.js')).imageCommand()] },
  { names: ['mount'], load: async () => [(await import('./mount.js')).mountCommand()] },
  { names: ['auth-helper', 'status', 'restart', 'config'], load: async () => (await import('./control.js')).controlCommands() },
  { names: ['demo'], load: async () => [(await import('./demo.js')).demoCommand()] },
];

try {
  const { Command } = await import('commander');
  const program = new Command('estargz-store')
    .description('lazy-pull additional layer store for podman / CRI-O, serving eStargz layers')
    .showHelpAfterError();
  const named = GROUPS.filter((g) => g.names.includes(process.argv[2] ?? ''));
  for (const group of named.length ? named : GROUPS) {
    for (const c of await group.load()) program.addCommand(c);
  }
  await program.parseAsync(process.argv);
} catch (err) {
  const message = isEstargzError(err) || isRegistryError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`estargz-store: ${message}\n`);
  process.exitCode = 1;
}
