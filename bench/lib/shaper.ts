/**
 * A userspace WAN emulator for loopback benchmarks: a TCP proxy (node:net)
 * in front of a local server that adds a one-way delay of RTT/2 in each
 * direction and limits each direction to a bandwidth shared by every
 * connection through the proxy, like one access link.
 *
 * Model, per direction:
 *  - a link of `mbps` with a token bucket of `burstBytes` (an idle link may
 *    send that much at once; then bytes leave at the line rate);
 *  - connections share the link round-robin, piece by piece (pieces of at
 *    most `pieceBytes`), so a large transfer on one connection does not
 *    hold a small response on another behind its whole backlog (what fair
 *    TCP flows through one bottleneck get);
 *  - a piece arrives RTT/2 after it finished leaving the link; arrival order
 *    per connection is the sending order (timers never reorder it);
 *  - a new connection's first client bytes arrive no earlier than 1.5 RTT
 *    after the connect (SYN, SYN-ACK, then data with the ACK), so fresh
 *    connections pay the TCP handshake;
 *  - each connection-direction holds at most `maxQueuedBytes` in the proxy:
 *    past that the sending socket is paused (back-pressure), so a sender
 *    cannot park megabytes in the emulated path.
 *
 * Not modelled: packet loss, TCP slow start and congestion control (loopback
 * TCP on both sides of the proxy has a large window from the start), so
 * results are a lower bound for a real path of the same RTT and bandwidth.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

export interface ShaperOptions {
  /** Where to forward: the real server. */
  targetHost: string;
  targetPort: number;
  /** Round-trip time added; each direction gets half. */
  rttMs: number;
  /** Bandwidth of each direction in Mbit/s (10^6 bits); 0 = unlimited. */
  mbps: number;
  /** Token bucket depth: bytes an idle link sends at once (default 32 KiB). */
  burstBytes?: number;
  /** Largest piece scheduled as one unit (default 16 KiB). */
  pieceBytes?: number;
  /** Back-pressure bound per connection and direction (default 1 MiB). */
  maxQueuedBytes?: number;
  /** Charge the TCP handshake (one extra RTT before a new connection's first request arrives; default true). */
  handshake?: boolean;
}

export interface ShaperStats {
  connections: number;
  /** Bytes client → server and server → client. */
  bytesUp: number;
  bytesDown: number;
}

export interface Shaper {
  /** "127.0.0.1:PORT" of the proxy. */
  host: string;
  port: number;
  options: Required<ShaperOptions>;
  stats(): ShaperStats;
  close(): Promise<void>;
}

const END = Symbol('end');
type Piece = Buffer | typeof END;

/** One direction of one connection: pieces wait for the link, then for their delivery time. */
class Pipe {
  /** Pieces waiting for the link. */
  readonly pending: Piece[] = [];
  /** Pieces that left the link, with their arrival time. */
  private readonly inflight: { at: number; piece: Piece }[] = [];
  private queuedBytes = 0;
  private paused = false;
  private timer: NodeJS.Timeout | undefined;
  private lastAt = 0;
  private blocked = false;
  closed = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly link: Link,
    private readonly oneWayMs: number,
    /** Earliest arrival of the first piece (the handshake), or 0. */
    private readonly notBefore: number,
    private readonly maxQueued: number,
    private readonly pieceBytes: number,
    private readonly count: (n: number) => void,
  ) {
    src.on('data', (d: Buffer) => this.take(d));
    src.on('end', () => this.push(END));
    dst.on('drain', () => {
      this.blocked = false;
      this.deliver();
    });
  }

  private take(d: Buffer): void {
    for (let i = 0; i < d.length; i += this.pieceBytes) this.push(d.subarray(i, Math.min(d.length, i + this.pieceBytes)));
    if (this.queuedBytes > this.maxQueued && !this.paused) {
      this.paused = true;
      this.src.pause();
    }
  }

  private push(piece: Piece): void {
    if (this.closed) return;
    if (piece !== END) this.queuedBytes += piece.length;
    this.pending.push(piece);
    this.link.enqueue(this);
  }

  /** Called by the link when `piece` (the head of `pending`) has left it at time `departed`. */
  departed(piece: Piece, departed: number): void {
    const at = Math.max(departed + this.oneWayMs, this.notBefore, this.lastAt);
    this.lastAt = at;
    this.inflight.push({ at, piece });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.blocked || this.closed) return;
    const head = this.inflight[0];
    if (!head) return;
    const wait = head.at - performance.now();
    if (wait <= 0.25) {
      this.deliver();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.deliver();
    }, wait);
  }

  private deliver(): void {
    if (this.closed) return;
    const now = performance.now();
    while (this.inflight.length && this.inflight[0]!.at <= now + 0.25 && !this.blocked) {
      const { piece } = this.inflight.shift()!;
      if (piece === END) {
        this.dst.end();
        continue;
      }
      this.queuedBytes -= piece.length;
      this.count(piece.length);
      if (!this.dst.write(piece)) this.blocked = true;
    }
    if (this.paused && this.queuedBytes <= this.maxQueued / 2) {
      this.paused = false;
      this.src.resume();
    }
    this.schedule();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.pending.length = 0;
    this.inflight.length = 0;
  }
}

/** One direction of the emulated access link: a token bucket served round-robin across connections. */
class Link {
  private freeAt = 0;
  private readonly active: Pipe[] = [];
  private readonly activeSet = new Set<Pipe>();
  private timer: NodeJS.Timeout | undefined;
  private readonly bytesPerMs: number;
  private readonly burstMs: number;

  constructor(mbps: number, burstBytes: number) {
    this.bytesPerMs = mbps > 0 ? (mbps * 1e6) / 8 / 1000 : Infinity;
    this.burstMs = burstBytes / this.bytesPerMs;
  }

  enqueue(pipe: Pipe): void {
    if (this.active.length === 0) {
      // The link was idle: it has saved up to `burstMs` of tokens. (Not while it is busy: late timers
      // then only make it send a batch, they must not cost bandwidth.)
      const now = performance.now();
      if (this.freeAt < now - this.burstMs) this.freeAt = now - this.burstMs;
    }
    if (!this.activeSet.has(pipe)) {
      this.activeSet.add(pipe);
      this.active.push(pipe);
    }
    if (!this.timer) this.run();
  }

  private run(): void {
    this.timer = undefined;
    const now = performance.now();
    while (this.active.length && this.freeAt <= now) {
      const pipe = this.active.shift()!;
      const piece = pipe.pending.shift();
      if (piece === undefined || pipe.closed) {
        this.activeSet.delete(pipe);
        continue;
      }
      if (piece !== END) this.freeAt += piece.length / this.bytesPerMs;
      pipe.departed(piece, this.freeAt);
      if (pipe.pending.length) this.active.push(pipe);
      else this.activeSet.delete(pipe);
    }
    if (this.active.length) this.timer = setTimeout(() => this.run(), Math.max(0, this.freeAt - now));
  }
}

/** Starts the proxy on 127.0.0.1 (a free port). */
export async function startShaper(opts: ShaperOptions): Promise<Shaper> {
  const o: Required<ShaperOptions> = {
    burstBytes: 32 << 10,
    pieceBytes: 16 << 10,
    maxQueuedBytes: 1 << 20,
    handshake: true,
    ...opts,
  };
  const up = new Link(o.mbps, o.burstBytes);
  const down = new Link(o.mbps, o.burstBytes);
  const stats: ShaperStats = { connections: 0, bytesUp: 0, bytesDown: 0 };
  const sockets = new Set<Socket>();
  const oneWay = o.rttMs / 2;
  const server: Server = createServer({ noDelay: true }, (client) => {
    stats.connections++;
    const acceptedAt = performance.now();
    const upstream = connect({ host: o.targetHost, port: o.targetPort, noDelay: true });
    sockets.add(client);
    sockets.add(upstream);
    const c2s = new Pipe(client, upstream, up, oneWay, o.handshake ? acceptedAt + 1.5 * o.rttMs : 0, o.maxQueuedBytes, o.pieceBytes, (n) => { stats.bytesUp += n; });
    const s2c = new Pipe(upstream, client, down, oneWay, 0, o.maxQueuedBytes, o.pieceBytes, (n) => { stats.bytesDown += n; });
    const teardown = (): void => {
      c2s.close();
      s2c.close();
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    // A reset on either side resets the other; a clean half-close travels as END through the pipes.
    client.on('error', teardown);
    upstream.on('error', teardown);
    let closes = 0;
    const closed = (): void => {
      if (++closes === 2) teardown();
    };
    client.on('close', closed);
    upstream.on('close', closed);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    port,
    options: o,
    stats: () => ({ ...stats }),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
