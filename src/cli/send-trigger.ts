/**
 * Sends the trigger request of `slipway trigger` so that a signal cannot lose its job. A signal
 * that arrives while the request is in flight lets it finish, for TRIGGER_GRACE_MS at most, and
 * the caller then cancels the job that the response names.
 */
import type { InterruptWatch } from './interrupts.js';
import { CliError } from './run.js';
import type { SlipwayClient, TriggerResponse } from './slipway-client.js';

/**
 * How long the trigger request may still take after a signal. The GitHub Actions runner sends
 * SIGKILL 10 s after SIGINT (actions/runner, src/Runner.Sdk/ProcessInvoker.cs). These 3 s, 2 s
 * for a repeated request and 5 s for the cancel request add up to those 10 s at most.
 */
export const TRIGGER_GRACE_MS = 3_000;
/** How long the repeated request that looks for the job of a lost response may take. */
const REPEAT_TIMEOUT_MS = 2_000;
/** Exit code of a job that may have been queued and could not be cancelled (see trigger.ts). */
const CANCEL_FAILED_EXIT_CODE = 9;

export interface TriggerRequest {
  type: string;
  body: Record<string, unknown>;
  idempotencyKey: string | undefined;
}

/**
 * Sends the trigger request and returns the job. When a signal came and the response did not
 * arrive within TRIGGER_GRACE_MS, sends the request again to find the job: the same GitHub run
 * attempt or Idempotency-Key returns the job that the first request created, or creates it.
 * Throws CliError with exit code 9 when that is not possible.
 */
export async function sendTrigger(
  client: SlipwayClient,
  request: TriggerRequest,
  interrupts: InterruptWatch,
): Promise<TriggerResponse> {
  const created = await sendWithGrace(client, request, interrupts);
  if (created !== undefined) return created;

  const lost =
    `the trigger request had no response within ${TRIGGER_GRACE_MS / 1000}s of ` +
    `${interrupts.signal}`;
  const repeatedBy = describeRepeat(request);
  if (repeatedBy !== undefined) {
    process.stderr.write(`slipway: ${lost}; sending it again to find the job of ${repeatedBy}\n`);
    const { type, body, idempotencyKey } = request;
    try {
      return await client.trigger(
        type,
        body,
        idempotencyKey,
        AbortSignal.timeout(REPEAT_TIMEOUT_MS),
      );
    } catch (error) {
      const message =
        error instanceof CliError
          ? error.message
          : `no response within ${REPEAT_TIMEOUT_MS / 1000}s`;
      process.stderr.write(`slipway: the repeated trigger request failed: ${message}\n`);
    }
  }
  throw new CliError(
    `${lost}, so a job for commit ${String(request.body.commit)} may have been queued and ` +
      `may run (exit ${CANCEL_FAILED_EXIT_CODE})`,
    CANCEL_FAILED_EXIT_CODE,
  );
}

/** Sends the request; returns undefined when it was stopped TRIGGER_GRACE_MS after a signal. */
async function sendWithGrace(
  client: SlipwayClient,
  request: TriggerRequest,
  interrupts: InterruptWatch,
): Promise<TriggerResponse | undefined> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const startGrace = () => {
    timer ??= setTimeout(() => controller.abort(), TRIGGER_GRACE_MS);
  };
  if (interrupts.signal !== undefined) startGrace();
  const unlisten = interrupts.listen(startGrace);
  try {
    const { type, body, idempotencyKey } = request;
    return await client.trigger(type, body, idempotencyKey, controller.signal);
  } catch (error) {
    if (controller.signal.aborted) return undefined;
    throw error;
  } finally {
    unlisten();
    clearTimeout(timer);
  }
}

/** Names what makes a repeated request return the same job, or undefined when nothing does. */
function describeRepeat(request: TriggerRequest): string | undefined {
  const parts: string[] = [];
  if (request.idempotencyKey !== undefined) {
    parts.push(`Idempotency-Key ${JSON.stringify(request.idempotencyKey)}`);
  }
  if (request.body.github_run_id !== undefined) {
    parts.push(`GitHub run ${String(request.body.github_run_id)}`);
  }
  return parts.length === 0 ? undefined : parts.join(' or ');
}
