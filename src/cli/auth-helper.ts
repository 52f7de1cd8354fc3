#!/usr/bin/env node
// `estargz-store-auth-helper`: what registries.conf names in
// additional-layer-store-auth-helper. containers/image runs it without
// arguments, so the store's root comes from ESTARGZ_STORE_ROOT (default
// /var/lib/estargz-store). It runs on every pull: it imports node built-ins
// and the control protocol only (no logger, metrics or HTTP client), which
// test/cli/auth-helper-imports.test.ts checks.
import { join } from 'node:path';
import { DEFAULT_ROOT, SOCKET_NAME } from '../daemon/control-protocol.js';
import { runAuthHelper } from './send-credentials.js';

try {
  await runAuthHelper(join(process.env.ESTARGZ_STORE_ROOT ?? DEFAULT_ROOT, SOCKET_NAME));
} catch (err) {
  process.stderr.write(`estargz-store-auth-helper: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
