/**
 * GitHub webhook pieces that need no server: the `X-Hub-Signature-256` check and the
 * decision what a `push` delivery should queue.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

const SIGNATURE_PATTERN = /^sha256=([0-9a-f]{64})$/i;

/**
 * Checks `X-Hub-Signature-256` (`sha256=` and the hex HMAC-SHA256 of the raw body with the
 * secret) in constant time. The body must be the bytes GitHub sent: parsing and
 * re-serialising the JSON changes them and fails the check.
 */
export function verifySignature(secret: string, body: Buffer, header: string | undefined): boolean {
  if (header === undefined) return false;
  const match = SIGNATURE_PATTERN.exec(header.trim());
  if (match === null) return false;
  const received = Buffer.from(match[1]!, 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  return received.length === expected.length && timingSafeEqual(received, expected);
}

/** Builds the `X-Hub-Signature-256` header GitHub would send for `body`. */
export function signBody(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export interface PushPayload {
  ref?: unknown;
  after?: unknown;
  deleted?: unknown;
  head_commit?: { id?: unknown } | null;
  repository?: { full_name?: unknown } | null;
}

export type PushDecision =
  | { action: 'queue'; commit: string; branch: string | null; tag: string | null }
  | { action: 'ignore'; reason: string };

export interface PushRules {
  /** `owner/name` the webhook belongs to; pushes of other repositories are ignored. */
  repository: string | undefined;
  /** Queue ci for pushed tags too. */
  tags: boolean;
}

/** Decides whether a push queues a ci job, and for which commit and branch or tag. */
export function decidePush(payload: PushPayload, rules: PushRules): PushDecision {
  const fullName = payload.repository?.full_name;
  if (
    rules.repository !== undefined &&
    typeof fullName === 'string' &&
    fullName.toLowerCase() !== rules.repository.toLowerCase()
  ) {
    return {
      action: 'ignore',
      reason: `push to ${fullName}, but GITHUB_REPOSITORY is ${rules.repository}`,
    };
  }
  const ref = typeof payload.ref === 'string' ? payload.ref : '';
  if (payload.deleted === true) return { action: 'ignore', reason: `${ref} was deleted` };
  const commit = typeof payload.after === 'string' ? payload.after.toLowerCase() : '';
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(commit) || /^0+$/.test(commit)) {
    return { action: 'ignore', reason: `the push of ${ref || 'an unknown ref'} names no commit` };
  }
  if (ref.startsWith('refs/heads/')) {
    return { action: 'queue', commit, branch: ref.slice('refs/heads/'.length), tag: null };
  }
  if (ref.startsWith('refs/tags/')) {
    if (!rules.tags) {
      return {
        action: 'ignore',
        reason: `${ref} is a tag; set GITHUB_WEBHOOK_TAGS=true to build tags`,
      };
    }
    return { action: 'queue', commit, branch: null, tag: ref.slice('refs/tags/'.length) };
  }
  return { action: 'ignore', reason: `${ref || 'the ref'} is neither a branch nor a tag` };
}
