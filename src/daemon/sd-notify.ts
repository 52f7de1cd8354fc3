import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../log/logger.js';

const run = promisify(execFile);

/**
 * Tells systemd the service is ready (Type=notify). Node cannot send unix
 * datagrams without a native module, so the message goes through
 * systemd-notify (the unit needs NotifyAccess=all, since the sender is a
 * child process), or python3 where systemd-notify is missing.
 */
export async function notifyReady(status: string, log: Logger): Promise<void> {
  const socket = process.env.NOTIFY_SOCKET;
  if (!socket) return;
  const message = `READY=1\nMAINPID=${process.pid}\nSTATUS=${status}\n`;
  try {
    await run('systemd-notify', ['--ready', `--pid=${process.pid}`, `--status=${status}`]);
    return;
  } catch {
    // not installed or refused: try python3
  }
  const script = [
    'import os, socket, sys',
    'addr = os.environ["NOTIFY_SOCKET"]',
    'addr = "\\0" + addr[1:] if addr.startswith("@") else addr',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.sendto(sys.argv[1].encode(), addr)',
  ].join('\n');
  try {
    await run('python3', ['-c', script, message]);
  } catch (err) {
    log.warn({ socket, err: (err as Error).message }, 'could not notify systemd (install systemd-notify or python3)');
  }
}
