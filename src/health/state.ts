/**
 * State variables that mirror health, so they can be synced to GitHub: `HEALTH_STATUS` for
 * the overall status and `HEALTH_<COMPONENT>` per check. They are written only when their
 * value changes, so a sync to GitHub finds a change only when health really changed.
 */
import type { Transaction } from 'kysely';
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
