#!/usr/bin/env node
import { Command } from 'commander';
import { isEstargzError } from '../estargz/errors.js';
import { layerCommand } from './layer.js';

const program = new Command('estargz-store')
  .description('lazy-pull additional layer store for podman / CRI-O, serving eStargz layers')
  .showHelpAfterError()
  .addCommand(layerCommand());

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const message = isEstargzError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`estargz-store: ${message}\n`);
  process.exitCode = 1;
}
