/**
 * Masking of secrets and Slipway API tokens in a task's output. `mask` masks a whole text,
 * and `OutputMasker` masks output that arrives in pieces. Both find every occurrence in the
 * unmasked text and replace each run of overlapping or touching occurrences with one `***`,
 * so a token or a long secret that contains a shorter secret is masked whole.
 */

export const MASK = '***';

/**
 * A Slipway API token (`slw_` and 32 URL-safe characters, see store/tokens.ts). A step that
 * prints one, such as the worker's own token read from its environment or a file, would
 * otherwise show it to every reader of the job's logs.
 */
// No check of what follows: `slw_<32 characters>_old.txt` still contains the token.
const API_TOKEN = /slw_[A-Za-z0-9_-]{32}/y;
const API_TOKEN_LENGTH = 36;
/** The end of a text that may be the start of an API token continued in the next piece. */
const API_TOKEN_START = /s(?:l(?:w(?:_[A-Za-z0-9_-]{0,31})?)?)?$/;

/** An occurrence to mask, or a run of them: `[from, to)` in UTF-16 code units. */
type Range = [from: number, to: number];

/**
 * Replaces every occurrence of each secret, and every Slipway API token, with `***`. The
 * matches are all found in the original text, and overlapping or touching ones become one
 * `***`. A secret replaced first would otherwise break up a token or a longer secret that
 * contains it, and the rest of that would show.
 */
export function mask(text: string, secrets: readonly string[]): string {
  return render(text, findRanges(text, secrets), text.length, false).masked;
}

/**
 * Masks output written in pieces so that the result equals `mask` of the whole output,
 * wherever the pieces are split. `push` holds back only the end of the text that may begin
 * a secret or token, and an already masked run that a later match could extend continues
 * without a second `***`.
 */
export class OutputMasker {
  readonly #secrets: string[];
  /** Knuth-Morris-Pratt prefix function of each secret, to find the longest end that begins it. */
  readonly #prefixTables: number[][];
  /** Unmasked text not yet returned, because a match may start in it. */
  #held = '';
  /**
   * Set while the last `***` returned may extend into `#held`: the number of leading held
   * characters it covers. A match that starts at or before that point joins the same `***`.
   */
  #openRun: number | undefined;

  constructor(secrets: readonly string[]) {
    this.#secrets = secrets.filter((secret) => secret !== '');
    this.#prefixTables = this.#secrets.map(prefixFunction);
  }

  /** Adds `text` and returns the masked output that no later text can change. */
  push(text: string): string {
    const buffer = this.#held + text;
    let cut = this.#matchFreeLength(buffer);
    // Never split a surrogate pair between the part returned and the part held.
    if (cut > 0 && isHighSurrogate(buffer.charCodeAt(cut - 1))) cut -= 1;
    return this.#take(buffer, cut);
  }

  /** Adds `text` and returns all held output masked, as at the end of the output. */
  flush(text = ''): string {
    const buffer = this.#held + text;
    const masked = this.#take(buffer, buffer.length);
    this.#openRun = undefined;
    return masked;
  }

  #take(buffer: string, cut: number): string {
    if (cut === 0) {
      this.#held = buffer;
      return '';
    }
    const ranges = findRanges(buffer, this.#secrets);
    if (this.#openRun !== undefined) ranges.unshift([0, this.#openRun]);
    const { masked, openRun } = render(buffer, ranges, cut, this.#openRun !== undefined);
    this.#held = buffer.slice(cut);
    this.#openRun = openRun;
    return masked;
  }

  /**
   * Returns the length of the start of `text` that no match still to come can reach: the
   * text before its longest end that is a proper prefix of a secret or of an API token.
   */
  #matchFreeLength(text: string): number {
    let start = text.length;
    this.#secrets.forEach((secret, index) => {
      const prefix = longestEndPrefix(text, secret, this.#prefixTables[index]!);
      start = Math.min(start, text.length - prefix);
    });
    const tokenStart = API_TOKEN_START.exec(text.slice(-(API_TOKEN_LENGTH - 1)));
    if (tokenStart !== null) start = Math.min(start, text.length - tokenStart[0].length);
    return start;
  }
}

/** Finds every occurrence of each secret and of an API token, sorted by start. */
function findRanges(text: string, secrets: readonly string[]): Range[] {
  const ranges: Range[] = [];
  for (const secret of secrets) {
    if (secret === '') continue;
    for (let at = text.indexOf(secret); at >= 0; at = text.indexOf(secret, at + 1)) {
      ranges.push([at, at + secret.length]);
    }
  }
  // Every start is tried, also inside another token, so the result does not depend on
  // where a scan began.
  for (let at = text.indexOf('slw_'); at >= 0; at = text.indexOf('slw_', at + 1)) {
    API_TOKEN.lastIndex = at;
    if (API_TOKEN.test(text)) ranges.push([at, at + API_TOKEN_LENGTH]);
  }
  return ranges.sort((a, b) => a[0] - b[0]);
}

/**
 * Masks `text` up to `cut`. Also returns `openRun`, set when the last run reaches `cut`: the
 * number of characters after `cut` that it covers, because a match starting at or before its
 * end still joins it. With `continued`, the run starting at 0 was already shown as `***`.
 */
function render(
  text: string,
  ranges: readonly Range[],
  cut: number,
  continued: boolean,
): { masked: string; openRun: number | undefined } {
  let masked = '';
  let copied = 0;
  for (const [from, to] of mergeRanges(ranges)) {
    if (from >= cut) break;
    masked += text.slice(copied, from);
    if (from > 0 || !continued) masked += MASK;
    copied = to;
    if (to >= cut) return { masked, openRun: to - cut };
  }
  return { masked: masked + text.slice(copied, cut), openRun: undefined };
}

/** Joins ranges sorted by start that overlap or touch into runs. */
function mergeRanges(ranges: readonly Range[]): Range[] {
  const runs: Range[] = [];
  for (const [from, to] of ranges) {
    const last = runs.at(-1);
    if (last !== undefined && from <= last[1]) last[1] = Math.max(last[1], to);
    else runs.push([from, to]);
  }
  return runs;
}

/**
 * Returns the Knuth-Morris-Pratt prefix function of `pattern`: entry i is the length of the
 * longest proper prefix of `pattern[0..i]` that is also its suffix.
 */
function prefixFunction(pattern: string): number[] {
  const table = new Array<number>(pattern.length).fill(0);
  let length = 0;
  for (let i = 1; i < pattern.length; i += 1) {
    while (length > 0 && pattern.charCodeAt(i) !== pattern.charCodeAt(length)) {
      length = table[length - 1]!;
    }
    if (pattern.charCodeAt(i) === pattern.charCodeAt(length)) length += 1;
    table[i] = length;
  }
  return table;
}

/** Returns the length of the longest end of `text` that is a proper prefix of `pattern`. */
function longestEndPrefix(text: string, pattern: string, table: readonly number[]): number {
  let length = 0;
  // A proper prefix is shorter than the pattern, so only the last characters can hold one.
  for (let i = Math.max(0, text.length - pattern.length + 1); i < text.length; i += 1) {
    while (length > 0 && text.charCodeAt(i) !== pattern.charCodeAt(length)) {
      length = table[length - 1]!;
    }
    if (text.charCodeAt(i) === pattern.charCodeAt(length)) length += 1;
  }
  return length;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
