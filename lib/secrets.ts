/**
 * The transport knows its secrets (URL userinfo, the Authorization header and any header that looks
 * like or is named as a secret, the TLS passphrase), so it can take them out of any text before the
 * text leaves the process: a receiver may echo a header in its error body, and that body becomes a
 * warning, `stats().lastError`, a dead letter's reason and CLI output.
 */

/** Headers whose value is always treated as a secret. */
const SECRET_HEADER = /authorization|cookie|token|secret|passw|api[-_]?key|auth|session|signature/i;

/** Shorter values are not searched for: they would match ordinary text and guard little. */
const MIN_SECRET_CHARS = 4;

const MASK = '***';

/** Userinfo in a URL-looking text (the password may hold `/`, `:` and more). */
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)[^\s@"'<>]*@/gi;

export class Secrets {
  private readonly needles: readonly string[];

  constructor(values: Iterable<string | undefined>) {
    const all = new Set<string>();
    for (const value of values) {
      if (value === undefined || value.length < MIN_SECRET_CHARS) continue;
      for (const form of forms(value)) if (form.length >= MIN_SECRET_CHARS) all.add(form);
    }
    // Longest first, so a secret that contains another is masked whole.
    this.needles = [...all].sort((a, b) => b.length - a.length);
  }

  /** `text` with every known secret, in every form it may be echoed in, and any URL userinfo masked. */
  redact(text: string): string {
    let out = text;
    for (const needle of this.needles) if (out.includes(needle)) out = out.split(needle).join(MASK);
    return out.replace(USERINFO, `$1${MASK}@`);
  }

  /** The same error with its message (and its causes' messages) redacted, in place. */
  redactError<E extends Error>(err: E): E {
    let e: unknown = err;
    for (let depth = 0; e instanceof Error && depth < 5; depth++) {
      try {
        e.message = this.redact(e.message);
        if (typeof e.stack === 'string') e.stack = this.redact(e.stack);
      } catch {
        // a frozen error: leave it
      }
      e = e.cause;
    }
    return err;
  }
}

/** The forms a secret can come back in: raw, percent-encoded, JSON-escaped, and their base64. */
function forms(value: string): string[] {
  const out = [value, encodeURIComponent(value), JSON.stringify(value).slice(1, -1)];
  // `Scheme token`: the token alone too (a receiver may echo just that).
  const scheme = /^(\w+)\s+(\S.*)$/.exec(value);
  if (scheme) {
    const token = scheme[2]!;
    out.push(token, encodeURIComponent(token));
    if (scheme[1]!.toLowerCase() === 'basic') {
      const decoded = Buffer.from(token, 'base64').toString('utf8');
      out.push(decoded);
      const colon = decoded.indexOf(':');
      if (colon >= 0) out.push(decoded.slice(colon + 1));
    }
  }
  return out;
}

export interface SecretSources {
  /** The URL as the user gave it (it may carry userinfo). */
  readonly rawUrl?: string;
  readonly authorization?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Header names the user named as secret, on top of those that look like one. */
  readonly secretHeaders?: readonly string[];
  readonly passphrase?: string;
}

export function isSecretHeader(name: string, named: readonly string[] = []): boolean {
  const lower = name.toLowerCase();
  return SECRET_HEADER.test(name) || named.some((n) => n.toLowerCase() === lower);
}

export function collectSecrets(s: SecretSources): Secrets {
  const values: Array<string | undefined> = [s.authorization, s.passphrase];
  if (s.rawUrl !== undefined) {
    const info = userinfoOf(s.rawUrl);
    if (info) {
      values.push(info.raw, info.password, safeDecode(info.password), `${safeDecode(info.user)}:${safeDecode(info.password)}`);
      values.push(Buffer.from(`${safeDecode(info.user)}:${safeDecode(info.password)}`).toString('base64'));
    }
  }
  for (const [name, value] of Object.entries(s.headers ?? {})) {
    if (isSecretHeader(name, s.secretHeaders)) values.push(value);
  }
  return new Secrets(values);
}

/** The userinfo of a URL as written (`user:pass` before the last `@` of the authority). */
function userinfoOf(raw: string): { raw: string; user: string; password: string } | undefined {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(raw);
  const start = scheme ? scheme[0].length : 0;
  const at = raw.lastIndexOf('@');
  if (at < start) return undefined;
  const info = raw.slice(start, at);
  const colon = info.indexOf(':');
  return { raw: info, user: colon < 0 ? info : info.slice(0, colon), password: colon < 0 ? '' : info.slice(colon + 1) };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * A URL that was refused, fit to show: anything before its last `@` (where userinfo would be) is
 * masked, whatever characters the password holds.
 */
export function describeRefusedUrl(raw: string): string {
  const at = raw.lastIndexOf('@');
  if (at < 0) return raw;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(raw)?.[0] ?? '';
  return `${scheme}${MASK}@${raw.slice(at + 1)}`;
}

/** For text whose secrets are not known (a queue file's contents, say): URL userinfo only. */
export const NO_SECRETS = new Secrets([]);
