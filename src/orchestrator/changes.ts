/**
 * Collects what a write transaction changed, so the matching events are emitted only after
 * the commit succeeds: a worker must never be woken for a task that was rolled back.
 */
import type { Events, SlipwayEvents } from '../events.js';

type EventName = keyof SlipwayEvents;

export class ChangeSet {
  readonly #pending: Array<{ name: EventName; args: unknown[] }> = [];
  readonly queuedTaskIds: string[] = [];

  taskQueued(taskId: string): void {
    this.queuedTaskIds.push(taskId);
  }

  record<K extends EventName>(name: K, ...args: SlipwayEvents[K]): void {
    this.#pending.push({ name, args });
  }

  /** Emits every recorded event; call after the transaction committed. */
  emit(events: Events): void {
    for (const { name, args } of this.#pending) {
      (events.emit as (name: EventName, ...args: unknown[]) => boolean)(name, ...args);
    }
    if (this.queuedTaskIds.length > 0) events.emit('tasks-queued', [...this.queuedTaskIds]);
  }
}
