/**
 * Plays a worker over the real agent API (register, claim, log upload, finish), so tests
 * can drive jobs to any ending while no worker process is part of the test.
 */
import { expect } from 'vitest';
import type { TestServer } from '../support/server.js';

export interface ClaimedTask {
  task_id: string;
  attempt: number;
  job: { id: string };
}

export class AgentClient {
  #offsets = new Map<string, number>();

  private constructor(
    readonly server: TestServer,
    readonly token: string,
    readonly workerId: string,
  ) {}

  static async register(server: TestServer, name: string): Promise<AgentClient> {
    const token = await server.token('agent', `agent-${name}`);
    const response = await server.request('POST', '/api/agent/workers', {
      token,
      body: { name, hostname: 'test-host', executors: ['local', 'docker'], capacity: 8 },
    });
    expect(response.status).toBe(200);
    return new AgentClient(server, token, name);
  }

  /** Claims queued tasks until every task of `jobId` is held, and returns them. */
  async claimJob(jobId: string, count: number): Promise<ClaimedTask[]> {
    const mine: ClaimedTask[] = [];
    for (let round = 0; mine.length < count && round < 20; round += 1) {
      const response = await this.server.request(
        'POST',
        `/api/agent/workers/${this.workerId}/claim`,
        { token: this.token, body: { max: 8, wait_seconds: 1 } },
      );
      expect(response.status).toBe(200);
      for (const task of response.body.tasks as ClaimedTask[]) {
        if (task.job.id === jobId) mine.push(task);
        else await this.finish(task, 'cancelled', 'claimed by a test for another job');
      }
    }
    expect(mine).toHaveLength(count);
    return mine;
  }

  async log(task: ClaimedTask, text: string): Promise<void> {
    const offset = this.#offsets.get(task.task_id) ?? 0;
    const response = await this.server.request('POST', `/api/agent/tasks/${task.task_id}/logs`, {
      token: this.token,
      body: { worker_id: this.workerId, attempt: task.attempt, offset, data: text },
    });
    expect(response.status).toBe(200);
    this.#offsets.set(task.task_id, offset + Buffer.byteLength(text));
  }

  async finish(task: ClaimedTask, status: string, reason?: string, exitCode?: number) {
    const response = await this.server.request('POST', `/api/agent/tasks/${task.task_id}/finish`, {
      token: this.token,
      body: {
        worker_id: this.workerId,
        attempt: task.attempt,
        status,
        exit_code: exitCode ?? (status === 'success' ? 0 : null),
        reason: reason ?? null,
        duration_ms: 10,
      },
    });
    expect(response.status).toBe(200);
  }
}
