/** How long a registry that fumbled a multi-range request is sent single ranges only. */
export const SINGLE_RANGE_MEMORY_MS = 10 * 60_000;

/**
 * Registry hosts that answered a multi-range request with 400, with fewer
 * parts than asked, or with the whole blob: they get single ranges for a
 * while, then multi-range requests are tried again (one partial answer from
 * a busy proxy must not cost a host its multi-range reads for the life of
 * the process). Owned by the registry client.
 */
export class SingleRangeHosts {
  private readonly until = new Map<string, number>();

  constructor(private readonly memoryMs = SINGLE_RANGE_MEMORY_MS) {}

  has(host: string): boolean {
    const until = this.until.get(host);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.until.delete(host);
    return false;
  }

  add(host: string): void {
    this.until.set(host, Date.now() + this.memoryMs);
  }
}
