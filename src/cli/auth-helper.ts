#!/usr/bin/env node
// `estargz-store-auth-helper`: what registries.conf names in
// additional-layer-store-auth-helper. containers/image runs it without
// arguments, so the store's root comes from ESTARGZ_STORE_ROOT (default
// /var/lib/estargz-store).
import { join } from 'node:path';
import { SOCKET_NAME } from '../daemon/control.js';
import { runAuthHelper } from './control.js';
import { DEFAULT_ROOT } from './mount.js';

try {
  await runAuthHelper(join(process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT, SOCKET_NAME));
} catch (err) {
  process.stderr.write(`estargz-store-auth-helper: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
