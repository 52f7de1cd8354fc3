/** A parsed `WWW-Authenticate` challenge: `Bearer realm="…",service="…",scope="…"`. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses the first challenge of a WWW-Authenticate header. Parameter values
 * may be quoted (with backslash escapes) or tokens; names are case-insensitive.
 */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  if (!text) return undefined;
  const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(text);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  const params: Record<string, string> = {};
  const re = /\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)/gys;
  const rest = m[2]!;
  let p: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (p = re.exec(rest)) !== null) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme, params };
}
