/**
 * Control characters other than tab: C0, DEL and C1. A terminal acts on them (ESC starts an
 * escape sequence, CR and LF start a new line), so text from the API must not reach one raw.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point.
const CONTROL_CHARACTERS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;

/**
 * Returns `text` with each control character other than tab written as an escape: `\n`, `\r`,
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
