/**
 * A stand-in for the parts of GitHub's REST API that Slipway calls, on 127.0.0.1, responding
 * as GitHub's REST documentation describes:
 *
 * - `GET /repos/{owner}/{repo}/actions/variables/{name}`: 200 with the variable, 404 when
 *   missing.
 * - `POST /repos/{owner}/{repo}/actions/variables`: 201 on create, 409 when the name exists.
 * - `PATCH /repos/{owner}/{repo}/actions/variables/{name}`: 204, 404 when missing.
 * - `POST /repos/{owner}/{repo}/statuses/{sha}`: 201 with the status; 422 for a state
 *   outside pending/success/failure/error or a description over 140 characters.
 *
 * Variable names are case-insensitive and stored upper-case, as GitHub does. Tests can make
 * the next requests fail with a 502, a 404 (to act out a race with another writer) or a 403
 * rate-limit answer carrying `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, or take
 * the whole API down.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StandinVariable {
  name: string;
  value: string;
  created_at: string;
  updated_at: string;
}

export interface StandinStatus {
  id: number;
  sha: string;
  state: string;
  context: string;
  description: string | null;
  target_url: string | null;
  created_at: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  body: unknown;
  authorization: string | undefined;
  status: number;
  at: number;
}

type Fault =
  | { kind: '502' }
  | { kind: 'not-found' }
  | { kind: 'rate-limit'; resetInSeconds: number }
  /** A 502 after `delayMs`, as from an overloaded proxy. */
  | { kind: 'slow-502'; delayMs: number };

interface PendingFault {
  fault: Fault;
  match: RegExp;
  remaining: number;
}

export interface GitHubStandin {
  url: string;
  token: string;
  repository: string;
  variables: Map<string, StandinVariable>;
  statuses: StandinStatus[];
  requests: RecordedRequest[];
  /** The next `count` requests whose "METHOD path" matches get the fault. */
  failNext(count: number, fault: Fault, match?: RegExp): void;
  /** While down, every request gets a 502. */
  setDown(down: boolean): void;
  /** Statuses of one commit and context, oldest first. */
  statusesFor(sha: string, context: string): StandinStatus[];
  close(): Promise<void>;
}

const DOCS = 'https://docs.github.com/rest';
const VALID_STATES = new Set(['pending', 'success', 'failure', 'error']);

export async function startGitHubStandin(
  options: { token?: string; repository?: string } = {},
): Promise<GitHubStandin> {
  const token = options.token ?? 'ghp_standin0000000000000000000000000000';
  const repository = options.repository ?? 'octo-org/hello-world';
  const variables = new Map<string, StandinVariable>();
  const statuses: StandinStatus[] = [];
  const requests: RecordedRequest[] = [];
  const faults: PendingFault[] = [];
  let down = false;

  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = undefined;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = text;
      }
      const path = (request.url ?? '/').split('?')[0]!;
      const record: RecordedRequest = {
        method: request.method ?? 'GET',
        path,
        body,
        authorization: request.headers.authorization,
        status: 0,
        at: Date.now(),
      };
      requests.push(record);
      const send = (status: number, payload?: unknown, headers: Record<string, string> = {}) => {
        record.status = status;
        response.writeHead(status, {
          ...(payload === undefined ? {} : { 'content-type': 'application/json; charset=utf-8' }),
          'x-github-media-type': 'github.v3; format=json',
          ...headers,
        });
        response.end(payload === undefined ? undefined : JSON.stringify(payload));
      };
      const fault = takeFault(faults, `${record.method} ${path}`);
      if (down || fault?.kind === '502') {
        send(502, { message: 'Server Error' });
        return;
      }
      if (fault?.kind === 'slow-502') {
        setTimeout(() => send(502, { message: 'Server Error' }), fault.delayMs);
        return;
      }
      if (fault?.kind === 'not-found') {
        send(404, { message: 'Not Found', documentation_url: DOCS });
        return;
      }
      if (fault?.kind === 'rate-limit') {
        const reset = Math.floor(Date.now() / 1000) + fault.resetInSeconds;
        send(
          403,
          {
            message: 'API rate limit exceeded for installation.',
            documentation_url: `${DOCS}/using-the-rest-api/rate-limits-for-the-rest-api`,
          },
          {
            'x-ratelimit-limit': '5000',
            'x-ratelimit-remaining': '0',
            'x-ratelimit-used': '5000',
            'x-ratelimit-reset': String(reset),
          },
        );
        return;
      }
      const auth = request.headers.authorization ?? '';
      if (auth !== `token ${token}` && auth !== `Bearer ${token}`) {
        send(401, { message: 'Bad credentials', documentation_url: DOCS });
        return;
      }
      route(record.method, path, body, send);
    });
  });

  function route(
    method: string,
    path: string,
    body: unknown,
    send: (status: number, payload?: unknown) => void,
  ): void {
    const repoPrefix = `/repos/${repository}`;
    if (!path.toLowerCase().startsWith(repoPrefix.toLowerCase())) {
      send(404, { message: 'Not Found', documentation_url: DOCS });
      return;
    }
    const rest = path.slice(repoPrefix.length);
    const input = (body ?? {}) as Record<string, unknown>;
    let match: RegExpExecArray | null;
    if (method === 'GET' && (match = /^\/actions\/variables\/([^/]+)$/.exec(rest))) {
      const variable = variables.get(decodeURIComponent(match[1]!).toUpperCase());
      if (variable === undefined) send(404, { message: 'Not Found', documentation_url: DOCS });
      else send(200, variable);
      return;
    }
    if (method === 'POST' && rest === '/actions/variables') {
      const name = String(input.name ?? '');
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || /^GITHUB_/i.test(name)) {
        send(422, { message: 'Invalid name', documentation_url: DOCS });
        return;
      }
      if (variables.has(name.toUpperCase())) {
        send(409, { message: 'Already exists - Variable already exists', documentation_url: DOCS });
        return;
      }
      const now = new Date().toISOString();
      variables.set(name.toUpperCase(), {
        name: name.toUpperCase(),
        value: String(input.value ?? ''),
        created_at: now,
        updated_at: now,
      });
      send(201, {});
      return;
    }
    if (method === 'PATCH' && (match = /^\/actions\/variables\/([^/]+)$/.exec(rest))) {
      const variable = variables.get(decodeURIComponent(match[1]!).toUpperCase());
      if (variable === undefined) {
        send(404, { message: 'Not Found', documentation_url: DOCS });
        return;
      }
      if (input.value !== undefined) variable.value = String(input.value);
      variable.updated_at = new Date().toISOString();
      send(204);
      return;
    }
    if (method === 'POST' && (match = /^\/statuses\/([0-9a-f]{40})$/.exec(rest))) {
      const state = String(input.state ?? '');
      const description = input.description === undefined ? null : String(input.description);
      if (!VALID_STATES.has(state)) {
        send(422, { message: 'Validation Failed', errors: [{ field: 'state', code: 'invalid' }] });
        return;
      }
      if (description !== null && description.length > 140) {
        send(422, {
          message: 'Validation Failed',
          errors: [{ message: 'description is too long (maximum is 140 characters)' }],
        });
        return;
      }
      const status: StandinStatus = {
        id: statuses.length + 1,
        sha: match[1]!,
        state,
        context: String(input.context ?? 'default'),
        description,
        target_url: input.target_url === undefined ? null : String(input.target_url),
        created_at: new Date().toISOString(),
      };
      statuses.push(status);
      send(201, { ...status, url: `${repoPrefix}/statuses/${status.sha}` });
      return;
    }
    send(404, { message: 'Not Found', documentation_url: DOCS });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    repository,
    variables,
    statuses,
    requests,
    failNext(count, fault, match = /.*/) {
      faults.push({ fault, match, remaining: count });
    },
    setDown(value) {
      down = value;
    },
    statusesFor(sha, context) {
      return statuses.filter((status) => status.sha === sha && status.context === context);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function takeFault(faults: PendingFault[], requestLine: string): Fault | undefined {
  const pending = faults.find((entry) => entry.remaining > 0 && entry.match.test(requestLine));
  if (pending === undefined) return undefined;
  pending.remaining -= 1;
  return pending.fault;
}
