#!/usr/bin/env node
import { Command } from 'commander';
import { isEstargzError } from '../estargz/errors.js';
import { isRegistryError } from '../registry/errors.js';
import { imageCommand } from './image.js';
import { layerCommand } from './layer.js';
import { mountCommand } from './mount.js';
import { controlCommands } from './control.js';

const program = new Command('estargz-store')
  .description('lazy-pull additional layer store for podman / CRI-O, serving eStargz layers')
  .showHelpAfterError()
  .addCommand(layerCommand())
  .addCommand(imageCommand())
  .addCommand(mountCommand());
for (const c of controlCommands()) program.addCommand(c);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const message = isEstargzError(err) || isRegistryError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`estargz-store: ${message}\n`);
  process.exitCode = 1;
}
