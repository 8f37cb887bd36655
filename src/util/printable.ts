/**
 * Characters that the rule `printable` rejects, as the inside of a regular expression's
 * character class: control characters other than tab (C0, DEL and C1) and the line and
 * paragraph separators. A terminal acts on control characters: ESC starts an escape sequence,
 * CR and LF start a new line. Some viewers break lines at the separators.
 */
export const UNPRINTABLE_CLASS = '\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f\\u2028\\u2029';

const UNPRINTABLE = new RegExp(`[${UNPRINTABLE_CLASS}]`, 'u');

/**
 * The characters of UNPRINTABLE_CLASS and the bidirectional embeddings, overrides and isolates,
 * which reorder the characters shown after them, so the text on screen differs from the stored
 * text. Text from the API must not reach a terminal with any of them raw.
 */
const CONTROL_CHARACTERS = new RegExp(`[${UNPRINTABLE_CLASS}\\u202a-\\u202e\\u2066-\\u2069]`, 'gu');

/** Returns the first character of `text` that the rule `printable` rejects, if any. */
export function firstUnprintable(text: string): string | undefined {
  return UNPRINTABLE.exec(text)?.[0];
}

/**
 * Returns `text` with each character of CONTROL_CHARACTERS written as an escape: `\n`, `\r`,
 * or `\u` and four hex digits. Text that a client prints to a terminal or a GitHub step summary
 * goes through this when another caller could have set it, such as a job's cancel reason.
 */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (character) => {
    if (character === '\n') return '\\n';
    if (character === '\r') return '\\r';
    return `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}
