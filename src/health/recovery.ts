/**
 * Finds the orchestrator's recovery runner. It is looked up at run time, so a build without
 * src/orchestrator/recovery.ts still validates recovery_procedure actions and reports each
 * run as failed with the reason.
 */
import type { AppContext } from '../app/context.js';
import type { AuditContext } from '../store/audit.js';

export type RecoveryRunner = (
  context: AppContext,
  name: string,
  params: Record<string, unknown>,
  audit: AuditContext,
) => Promise<unknown>;

const RECOVERY_MODULE = '../orchestrator/recovery.js';

export async function loadRecoveryRunner(): Promise<RecoveryRunner | undefined> {
  try {
    const module = (await import(RECOVERY_MODULE)) as { runRecoveryProcedure?: RecoveryRunner };
    return module.runRecoveryProcedure;
  } catch {
    return undefined;
  }
}
