// What `estargz-store-auth-helper` and `estargz-store auth-helper` do. Only
// the control protocol module is imported: see src/daemon/control-protocol.ts.
import { controlRequest } from '../daemon/control-protocol.js';
import type { Credentials } from '../registry/auth/credentials.js';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
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
