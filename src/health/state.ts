/**
 * State variables that mirror health, so they can be synced to GitHub: `HEALTH_STATUS` for
 * the overall status and `HEALTH_<COMPONENT>` per check. They are written only when their
 * value changes, so a sync to GitHub finds a change only when health really changed.
 */
import type { Transaction } from 'kysely';
import { appendAudit, type AuditContext } from '../store/audit.js';
import type { Database } from '../store/schema.js';
import { getStateVariable, setStateVariable } from '../store/state-variables.js';
import { worstOf, type HealthState } from './types.js';

export const OVERALL_VARIABLE = 'HEALTH_STATUS';

/** `HEALTH_` and the component name in upper case, with anything but A-Z and 0-9 as `_`. */
export function componentVariable(component: string): string {
  return `HEALTH_${component.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** Sets a variable unless it already has this value; returns the previous value when changed. */
async function setIfChanged(
  trx: Transaction<Database>,
  name: string,
  value: string,
): Promise<{ changed: boolean; previous: string | undefined }> {
  const previous = await getStateVariable(trx, name);
  if (previous === value) return { changed: false, previous };
  await setStateVariable(trx, name, value);
  return { changed: true, previous };
}

export async function updateComponentVariable(
  trx: Transaction<Database>,
  component: string,
  status: HealthState,
): Promise<boolean> {
  return (await setIfChanged(trx, componentVariable(component), status)).changed;
}

/** Recomputes the overall status from the configured components and stores it on change. */
export async function updateOverallVariable(
  trx: Transaction<Database>,
  components: string[],
): Promise<{ status: HealthState; previous: string | undefined; changed: boolean }> {
  const rows =
    components.length === 0
      ? []
      : await trx
          .selectFrom('health_components')
          .select('status')
          .where('name', 'in', components)
          .where('status', 'is not', null)
          .execute();
  const status = worstOf(rows.map((row) => row.status as HealthState));
  const { changed, previous } = await setIfChanged(trx, OVERALL_VARIABLE, status);
  return { status, previous, changed };
}

/**
 * Deletes the `HEALTH_<NAME>` variables of checks that the pipeline file no longer lists, with
 * one `health_variable_removed` audit row each, and returns their names. Only the variables of
 * checks that ran once (a `health_components` row) count, so a variable that a person set under
 * a HEALTH_ name stays. The component rows themselves stay, and so does their history.
 */
export async function removeStaleComponentVariables(
  trx: Transaction<Database>,
  checks: string[],
  audit: AuditContext,
): Promise<string[]> {
  const configured = new Set(checks.map(componentVariable));
  const components = await trx.selectFrom('health_components').select('name').execute();
  const removed: string[] = [];
  for (const { name: component } of components) {
    const variable = componentVariable(component);
    if (configured.has(variable) || variable === OVERALL_VARIABLE) continue;
    const value = await getStateVariable(trx, variable);
    if (value === undefined) continue;
    await trx.deleteFrom('state_variables').where('name', '=', variable).execute();
    await appendAudit(trx, audit, {
      action: 'health_variable_removed',
      details: { variable, component, value, reason: 'the check is no longer configured' },
    });
    removed.push(variable);
  }
  return removed;
}
