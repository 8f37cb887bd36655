/**
 * Measures the GitHub integration on this machine and prints the figures:
 * - webhook: time to respond to a signed push delivery that queues a ci job (p50, p95);
 * - statuses: time from a job ending (the PATCH response) to its `slipway/ci` success status
 *   arriving at a GitHub stand-in on 127.0.0.1, for jobs ended one at a time. The figure
 *   includes the one-second spacing between writes that the throttling plugin keeps.
 *
 * Run: npx tsx bench/github/run.ts [deliveries] [jobs]
 */
import { randomUUID } from 'node:crypto';
import { signBody } from '../../src/github/webhook.js';
import { startGitHubStandin } from '../../test/support/github-standin.js';
import { startTestServer } from '../../test/support/server.js';

const deliveries = Number(process.argv[2] ?? 200);
const jobs = Number(process.argv[3] ?? 10);
const SECRET = 'bench-secret';

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function benchWebhook(): Promise<void> {
  const server = await startTestServer({ GITHUB_WEBHOOK_SECRET: SECRET });
  const times: number[] = [];
  try {
    for (let i = 0; i < deliveries; i += 1) {
      const body = JSON.stringify({
        ref: 'refs/heads/main',
        after: i.toString(16).padStart(40, '0').replace(/^0/, 'a'),
        deleted: false,
        repository: { full_name: 'octo-org/hello-world' },
      });
      const started = performance.now();
      const response = await fetch(`${server.url}/api/webhooks/github`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-github-event': 'push',
          'x-github-delivery': randomUUID(),
          'x-hub-signature-256': signBody(SECRET, body),
        },
        body,
      });
      await response.text();
      if (response.status !== 201)
        throw new Error(`delivery ${i} got status ${response.status}, expected 201`);
      times.push(performance.now() - started);
    }
  } finally {
    await server.close();
  }
  console.log(
    `webhook push -> ci job queued: ${deliveries} deliveries, p50 ${percentile(times, 50).toFixed(1)} ms, p95 ${percentile(times, 95).toFixed(1)} ms`,
  );
}

async function benchStatuses(): Promise<void> {
  const standin = await startGitHubStandin();
  const server = await startTestServer({
    GITHUB_TOKEN: standin.token,
    GITHUB_REPOSITORY: standin.repository,
    GITHUB_API_URL: standin.url,
    GITHUB_SYNC_INTERVAL: '0',
  });
  const token = server.adminToken;
  const times: number[] = [];
  try {
    for (let i = 0; i < jobs; i += 1) {
      const commit = (i + 1).toString(16).padStart(40, 'b');
      const created = await server.request('POST', '/api/trigger/ci', { token, body: { commit } });
      const jobId = created.body.job_id as string;
      await server.request('PATCH', `/api/job/${jobId}/status`, {
        token,
        body: { status: 'running' },
      });
      // Let the pending statuses go first, so the measurement covers one report.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await server.request('PATCH', `/api/job/${jobId}/status`, {
        token,
        body: { status: 'success' },
      });
      const ended = Date.now();
      for (;;) {
        const got = standin.statusesFor(commit, 'slipway/ci').find((s) => s.state === 'success');
        if (got !== undefined) {
          const request = standin.requests.find(
            (r) => r.path.endsWith(commit) && (r.body as { state?: string }).state === 'success',
          );
          times.push(request!.at - ended);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  } finally {
    await server.close();
    await standin.close();
  }
  console.log(
    `job end -> commit status at the stand-in: ${jobs} jobs, p50 ${percentile(times, 50)} ms, max ${Math.max(...times)} ms`,
  );
}

await benchWebhook();
await benchStatuses();
