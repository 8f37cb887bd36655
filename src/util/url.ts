/**
 * Redaction of the secrets in URLs, for messages and logs: the user name and password, the
 * values of secret-looking query parameters and Slipway tokens. A URL such as
 * `http://user:password@host/?token=...` is configuration that a CLI error or a log line may print.
 */

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;
/** Characters that end the authority of an http(s) URL (WHATWG URL parsing). */
const AUTHORITY_END = /[/\\?#]/;
/** A URL inside free text: a scheme and everything up to whitespace, a quote or a bracket. */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>()]*/gi;

/**
 * Returns `url` with its user name and password replaced by `***`, and its secrets replaced as
 * redactSecretsInUrl does. A user name alone is redacted as well, because it is often a token. When `url` does not parse, the end of its
 * authority is unknown, so everything from the scheme up to its last "@" is replaced.
 */
export function redactUrl(url: string): string {
  const scheme = SCHEME.exec(url);
  if (scheme === null) return redactSecretsInUrl(url);
  const start = scheme[0].length;
  let end = url.length;
  if (URL.canParse(url)) {
    const offset = url.slice(start).search(AUTHORITY_END);
    if (offset !== -1) end = start + offset;
  }
  const at = url.lastIndexOf('@', end - 1);
  if (at < start) return redactSecretsInUrl(url);
  return redactSecretsInUrl(`${url.slice(0, start)}***${url.slice(at)}`);
}

/** Query parameters whose values are secrets when a client puts one in a URL by mistake. */
const SECRET_PARAMETER = /^(.*token|.*secret|password|.*key|signature)$/i;

/**
 * Returns the URL with the values of secret-looking query parameters and any Slipway token
 * replaced, because a request line or a configured URL keeps the URL as it was written.
 */
export function redactSecretsInUrl(url: string): string {
  const query = url.indexOf('?');
  const redacted =
    query < 0
      ? url
      : url.slice(0, query + 1) +
        url
          .slice(query + 1)
          .split('&')
          .map((pair) => {
            const equals = pair.indexOf('=');
            if (equals < 0) return pair;
            const name = decodeURIComponentSafe(pair.slice(0, equals));
            return SECRET_PARAMETER.test(name) ? `${pair.slice(0, equals)}=[redacted]` : pair;
          })
          .join('&');
  return redacted.replace(/slw_[A-Za-z0-9_-]+/g, 'slw_[redacted]');
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Returns `text` with redactUrl applied to every URL in it. */
export function redactUrls(text: string): string {
  return text.replace(URL_IN_TEXT, (url) => redactUrl(url));
}

/**
 * Returns `url` without its user name and password, or unchanged when it does not parse.
 * Slipway's clients send a bearer token, and fetch rejects every URL that carries credentials.
 */
export function withoutCredentials(url: string): string {
  if (!URL.canParse(url)) return url;
  const parsed = new URL(url);
  if (parsed.username === '' && parsed.password === '') return url;
  parsed.username = '';
  parsed.password = '';
  return parsed.href.replace(/\/+$/, '');
}
