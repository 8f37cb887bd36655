/** Rules for the commit and branch values of a trigger. */

/** A full or abbreviated object name: SHA-1 (40) or SHA-256 (64) hex, at least 7 characters. */
export const COMMIT_PATTERN = '^[0-9a-fA-F]{7,64}$';
export const MAX_BRANCH_LENGTH = 255;

export function isCommitSha(value: string): boolean {
  return new RegExp(COMMIT_PATTERN).test(value);
}

/**
 * Returns true when two commit texts name the same commit as git reads abbreviations. They
 * are equal, or the shorter has at least 7 hex digits and the longer starts with it. Case is
 * ignored.
 */
export function isSameCommit(first: string, second: string): boolean {
  const [shorter, longer] =
    first.length <= second.length
      ? [first.toLowerCase(), second.toLowerCase()]
      : [second.toLowerCase(), first.toLowerCase()];
  if (shorter === longer) return true;
  return shorter.length >= 7 && isCommitSha(shorter) && longer.startsWith(shorter);
}

/**
 * Returns why `name` is not a valid branch name under git's ref rules
 * (git-check-ref-format), or undefined when it is valid. Unicode is allowed, except C1
 * control characters and line or paragraph separators, which git accepts.
 */
export function branchNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (Buffer.byteLength(name) > MAX_BRANCH_LENGTH) {
    return `must be at most ${MAX_BRANCH_LENGTH} bytes`;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(name)) {
    return 'must not contain spaces, control characters or any of ~ ^ : ? * [ \\';
  }
  // git rejects only ASCII control characters. In logs and terminals, a C1 control (U+0080 to
  // U+009F) can start an escape sequence and a separator can start a line, so the branch
  // follows the rule of a reason here (rule printable in src/api/schemas.ts).
  if (/[\x80-\x9f\u2028\u2029]/.test(name)) {
    return 'must not contain C1 control characters (U+0080 to U+009F) or line or paragraph separators (U+2028, U+2029)';
  }
  // A lone UTF-16 surrogate has no UTF-8 form, so git and the database would each mangle it.
  if (/\p{Cs}/u.test(name)) return 'must be valid Unicode (it contains a lone surrogate)';
  if (name.includes('..')) return 'must not contain ".."';
  if (name.includes('@{')) return 'must not contain "@{"';
  if (name === '@') return 'must not be "@"';
  // git reserves HEAD, so `git branch HEAD` fails with "not a valid branch name".
  if (name === 'HEAD') return 'must not be "HEAD"';
  if (name.startsWith('-')) return 'must not start with "-"';
  if (name.startsWith('/') || name.endsWith('/') || name.includes('//')) {
    return 'must not start or end with "/" or contain "//"';
  }
  if (name.endsWith('.')) return 'must not end with "."';
  for (const component of name.split('/')) {
    if (component.startsWith('.'))
      return 'must not have a part between slashes that starts with "."';
    if (component.endsWith('.lock'))
      return 'must not have a part between slashes that ends with ".lock"';
  }
  return undefined;
}
