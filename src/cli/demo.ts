import { Command } from 'commander';

export function demoCommand(): Command {
  return new Command('demo')
    .description('try it out: a local registry, a small image from this machine\'s files, image convert, the store mounted, '
      + 'and a private podman that pulls lazily, runs and saves it; prints each step\'s time and the bytes fetched, '
      + 'then removes everything (as root; needs docker-registry and podman)')
    .action(async () => {
      const { runDemo } = await import('../demo/run.js');
      await runDemo();
    });
}
