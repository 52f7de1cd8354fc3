import { isIP } from 'node:net';
import { RegistryError } from './errors.js';
import { DOCKER_HUB } from './reference.js';

/**
 * Per-registry configuration, in the Go stargz-store's shape so that its
 * users' config carries over:
 *   [[resolver.host."registry.example.com".mirrors]]
 *   host = "mirror.example.com:5000"; insecure = true; request_timeout_sec = 10
 *   header = { "X-Foo" = ["bar"] }
 */
export interface MirrorConfig {
  host: string;
  insecure?: boolean;
  /** 0 or absent: the default timeout; negative: none. */
  request_timeout_sec?: number;
  header?: Record<string, string | string[]>;
}

export interface ResolverConfig {
  host?: Record<string, { mirrors?: MirrorConfig[] }>;
  /** Default per-request timeout (seconds). */
  request_timeout_sec?: number;
}

/** One place to send requests for a registry: a mirror or the origin. */
export interface Endpoint {
  /** host[:port] used in URLs. */
  host: string;
  scheme: 'http' | 'https';
  /** Path before "/v2" (mirrors may live under a path). */
  pathPrefix: string;
  headers: Record<string, string>;
  /** Per-request timeout in ms; 0 = none. */
  timeoutMs: number;
  /** True for a mirror: credentials of the origin registry are not sent to it. */
  mirror: boolean;
  /** The registry the reference names (for `?ns=` on mirrors and for credentials). */
  registry: string;
}

export const DEFAULT_REQUEST_TIMEOUT_SEC = 30;

/** Hosts that are talked to over plain HTTP without being marked insecure. */
export function isLocalHost(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  if (name === 'localhost' || name === '::1') return true;
  return isIP(name) === 4 && name.startsWith('127.');
}

function flattenHeaders(header: MirrorConfig['header'], where: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(header ?? {})) {
    if (typeof v === 'string') out[k] = v;
    else if (Array.isArray(v) && v.every((s) => typeof s === 'string')) out[k] = v.join(', ');
    else throw new RegistryError('BAD_CONFIG', `${where}: header ${JSON.stringify(k)} must be a string or a list of strings`);
  }
  return out;
}

function timeoutOf(sec: number | undefined, fallbackSec: number): number {
  const s = sec === undefined || sec === 0 ? fallbackSec : sec;
  return s < 0 ? 0 : s * 1000;
}

/** The endpoints for a registry, in the order to try them: its mirrors, then itself. */
export function endpointsFor(registry: string, config: ResolverConfig = {}): Endpoint[] {
  // 0 means "the default", as in the Go stargz-store; negative means no timeout.
  const defaultSec = config.request_timeout_sec === undefined || config.request_timeout_sec === 0 ? DEFAULT_REQUEST_TIMEOUT_SEC : config.request_timeout_sec;
  const hostConfig = config.host?.[registry] ?? (registry === DOCKER_HUB ? config.host?.['registry-1.docker.io'] : undefined);
  const endpoints: Endpoint[] = [];
  let originSeen = false;
  for (const [i, m] of (hostConfig?.mirrors ?? []).entries()) {
    const where = `resolver.host."${registry}".mirrors[${i}]`;
    if (typeof m.host !== 'string' || m.host === '') throw new RegistryError('BAD_CONFIG', `${where}: "host" is required`);
    const slash = m.host.indexOf('/');
    const host = slash < 0 ? m.host : m.host.slice(0, slash);
    const pathPrefix = slash < 0 ? '' : m.host.slice(slash).replace(/\/+$/, '');
    const isOrigin = host === registry;
    originSeen ||= isOrigin && pathPrefix === '';
    endpoints.push({
      host: isOrigin && registry === DOCKER_HUB ? 'registry-1.docker.io' : host,
      scheme: m.insecure || isLocalHost(host) ? 'http' : 'https',
      pathPrefix,
      headers: flattenHeaders(m.header, where),
      timeoutMs: timeoutOf(m.request_timeout_sec, defaultSec),
      mirror: !isOrigin,
      registry,
    });
  }
  if (!originSeen) {
    endpoints.push({
      host: registry === DOCKER_HUB ? 'registry-1.docker.io' : registry,
      scheme: isLocalHost(registry) ? 'http' : 'https',
      pathPrefix: '',
      headers: {},
      timeoutMs: timeoutOf(undefined, defaultSec),
      mirror: false,
      registry,
    });
  }
  return endpoints;
}

/** URL of a /v2/ API path on an endpoint; mirrors get `ns=<registry>`, as containerd's mirror convention has it. */
export function endpointUrl(ep: Endpoint, path: string): string {
  const url = `${ep.scheme}://${ep.host}${ep.pathPrefix}/v2/${path}`;
  if (!ep.mirror) return url;
  return `${url}${url.includes('?') ? '&' : '?'}ns=${encodeURIComponent(ep.registry)}`;
}

/** Identifies an endpoint's server (for remembering that it is down): one mirror serving several registries is one key. */
export function endpointKey(ep: Endpoint): string {
  return `${ep.scheme}://${ep.host}${ep.pathPrefix}`;
}
