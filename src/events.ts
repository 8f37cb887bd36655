/**
 * In-process notifications, emitted after the change they describe is committed. Other
 * processes learn of changes through the database (see the dispatcher's change watch).
 */
import { EventEmitter } from 'node:events';
import type { Status } from './jobs/status.js';

export interface SlipwayEvents {
  /** Tasks became `queued`, so a waiting worker may claim them. */
  'tasks-queued': [taskIds: string[]];
  /** A worker was asked to stop a task it holds. */
  'task-cancel-requested': [taskId: string];
  /** A task's status changed. */
  'task-status': [change: { taskId: string; jobId: string; from: Status; to: Status }];
  /** A job was created (by a trigger), already in its first status. */
  'job-created': [job: { jobId: string; type: string; status: Status }];
  /** A job's derived status changed. */
  'job-status': [change: { jobId: string; type: string; from: Status; to: Status }];
}

export class Events extends EventEmitter<SlipwayEvents> {
  constructor() {
    super();
    // Every long-polling worker request listens for queued tasks.
    this.setMaxListeners(0);
  }
}
