/**
 * Control characters other than tab (C0, DEL and C1), the line and paragraph separators, and
 * the bidirectional embeddings, overrides and isolates. A terminal acts on control characters:
 * ESC starts an escape sequence, CR and LF start a new line. Some viewers break lines at the
 * separators. The bidirectional ones reorder the characters shown after them, so the text on
 * screen differs from the stored text. Text from the API must not reach a terminal with any raw.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point.
const CONTROL_CHARACTERS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028-\u202e\u2066-\u2069]/g;

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
