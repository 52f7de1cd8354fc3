import { RegistryError } from './errors.js';

/** A parsed, normalized image reference: `host/repository[:tag][@digest]`. */
export interface ImageReference {
  /** Registry as users write it ("docker.io", "127.0.0.1:5000"). */
  registry: string;
  /** Repository path inside the registry ("library/python"). */
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

// The grammar of distribution/reference.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::\d+)?$/;

function bad(ref: string, why: string): RegistryError {
  return new RegistryError('BAD_REFERENCE', `invalid image reference ${JSON.stringify(ref)}: ${why}`);
}

/**
 * Parses `name[:tag][@digest]`. A first component with a dot or a port, or
 * "localhost", is the registry host; otherwise the image is on Docker Hub,
 * and one-component Hub names get "library/".
 */
export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (ref === '' || ref.length > 4096) throw bad(input, 'empty or too long');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(input, `digest ${JSON.stringify(digest)} is not algorithm:hex`);
    if (digest.startsWith('sha256:') && !SHA256.test(digest)) throw bad(input, 'sha256 digest must be 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `tag ${JSON.stringify(tag)} is not valid`);
  }
  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    registry = first;
    parts.shift();
    if (!HOST.test(registry)) throw bad(input, `registry host ${JSON.stringify(registry)} is not valid`);
  }
  if (DOCKER_HUB_ALIASES.has(registry)) registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) {
    throw bad(input, 'repository path components must be lowercase letters, digits and separators');
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  return { registry, repository: parts.join('/'), ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/** The canonical, fully qualified form: `docker.io/library/python:3.11`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** What to ask the registry for: the digest when pinned, else the tag (default "latest"). */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}
