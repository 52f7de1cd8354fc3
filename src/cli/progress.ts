/**
 * Per-item progress for long commands (`image convert`, later `image
 * optimize`): on a terminal, one line per item (a layer) redrawn in place
 * with a bar and byte counts; otherwise one JSON object per line and event,
 * for scripts and CI logs. Hand-written (a few ANSI sequences): none of the
 * project's dependencies draws bars, and the common packages for it bring
 * more than this needs.
 */

/** Byte counts of one item; any may be absent while unknown. */
export interface ProgressCounts {
  /** Source bytes fetched (the compressed layer). */
  downloaded?: number;
  /** Source size (compressed). */
  size?: number;
  /** Uncompressed tar bytes converted, of `tarBytes`. */
  read?: number;
  tarBytes?: number;
  /** Result bytes written. */
  written?: number;
  /** Result bytes pushed to the registry. */
  pushed?: number;
}

export interface ProgressItem extends ProgressCounts {
  /** What the item is doing now, e.g. "download", "convert", "push", "done". */
  stage: string;
}

export interface ProgressReporter {
  start(id: string, label: string, item: ProgressItem): void;
  update(id: string, item: Partial<ProgressItem>): void;
  done(id: string, item: Partial<ProgressItem>): void;
  /** Draws the final state and stops redrawing. */
  close(): void;
}

export type ProgressMode = 'auto' | 'tty' | 'json' | 'none';

interface Writer {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Least time between two redraws (tty) or two progress lines of one item (json). */
  intervalMs?: number;
  now?: () => number;
}

export function createProgress(out: Writer, mode: ProgressMode, opts: ProgressOptions = {}): ProgressReporter {
  const resolved = mode === 'auto' ? (out.isTTY ? 'tty' : 'json') : mode;
  if (resolved === 'none') return { start() {}, update() {}, done() {}, close() {} };
  const now = opts.now ?? Date.now;
  return resolved === 'tty' ? new TtyProgress(out, opts.intervalMs ?? 100, now) : new JsonProgress(out, opts.intervalMs ?? 1000, now);
}

function mb(n: number | undefined): string {
  return n === undefined ? '?' : (n / 1e6).toFixed(1);
}

/** The line of one item: label, stage, a bar for the current stage, counts in MB. */
export function formatLine(label: string, item: ProgressItem, width = 24): string {
  let fraction: number | undefined;
  if (item.stage === 'download' && item.size) fraction = (item.downloaded ?? 0) / item.size;
  else if (item.stage === 'convert' && item.tarBytes) fraction = (item.read ?? 0) / item.tarBytes;
  else if (item.stage === 'push' && item.written) fraction = (item.pushed ?? 0) / item.written;
  else if (item.stage === 'done') fraction = 1;
  const full = fraction === undefined ? 0 : Math.round(Math.min(1, Math.max(0, fraction)) * width);
  const bar = `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
  const counts = [
    `read ${mb(item.downloaded)}/${mb(item.size)}`,
    item.tarBytes !== undefined ? `tar ${mb(item.read)}/${mb(item.tarBytes)}` : '',
    item.written !== undefined ? `written ${mb(item.written)}` : '',
    item.pushed !== undefined ? `pushed ${mb(item.pushed)}` : '',
  ].filter(Boolean).join('  ');
  return `${label} ${item.stage.padEnd(12)} ${bar} ${counts} MB`;
}

class TtyProgress implements ProgressReporter {
  private readonly items = new Map<string, { label: string; item: ProgressItem }>();
  private drawn = 0;
  private lastDraw = -Infinity;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly out: Writer, private readonly intervalMs: number, private readonly now: () => number) {}

  start(id: string, label: string, item: ProgressItem): void {
    this.items.set(id, { label, item: { ...item } });
    this.draw(true);
  }

  update(id: string, item: Partial<ProgressItem>): void {
    const entry = this.items.get(id);
    if (!entry) return;
    const stageChanged = item.stage !== undefined && item.stage !== entry.item.stage;
    Object.assign(entry.item, item);
    this.draw(stageChanged);
  }

  done(id: string, item: Partial<ProgressItem>): void {
    this.update(id, { ...item, stage: 'done' });
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.render();
  }

  /** Redraws now if the last redraw is old enough (or `force`), else once the interval is over. */
  private draw(force: boolean): void {
    const wait = this.lastDraw + this.intervalMs - this.now();
    if (force || wait <= 0) {
      this.render();
      return;
    }
    this.timer ??= setTimeout(() => { this.timer = null; this.render(); }, wait);
    this.timer.unref?.();
  }

  private render(): void {
    this.lastDraw = this.now();
    const columns = this.out.columns ?? 120;
    // Up to the first line drawn, then each line cleared and rewritten: the block redraws in place.
    let text = this.drawn ? `\x1b[${this.drawn}A` : '';
    for (const { label, item } of this.items.values()) text += `\r\x1b[2K${formatLine(label, item).slice(0, Math.max(20, columns - 1))}\n`;
    this.drawn = this.items.size;
    this.out.write(text);
  }
}

class JsonProgress implements ProgressReporter {
  private readonly lastLine = new Map<string, number>();

  constructor(private readonly out: Writer, private readonly intervalMs: number, private readonly now: () => number) {}

  private readonly state = new Map<string, ProgressItem>();

  start(id: string, label: string, item: ProgressItem): void {
    this.state.set(id, { ...item });
    this.emit('layer-start', id, { label, ...item });
  }

  update(id: string, item: Partial<ProgressItem>): void {
    const current = this.state.get(id);
    if (!current) return;
    const stageChanged = item.stage !== undefined && item.stage !== current.stage;
    Object.assign(current, item);
    const last = this.lastLine.get(id) ?? -Infinity;
    if (!stageChanged && this.now() - last < this.intervalMs) return;
    this.emit('layer-progress', id, current);
  }

  done(id: string, item: Partial<ProgressItem>): void {
    const current = this.state.get(id);
    if (!current) return;
    Object.assign(current, item, { stage: 'done' });
    this.emit('layer-done', id, current);
    this.state.delete(id);
  }

  close(): void {}

  private emit(event: string, id: string, fields: object): void {
    this.lastLine.set(id, this.now());
    this.out.write(JSON.stringify({ event, id, ...fields }) + '\n');
  }
}
