/**
 * A reverse proxy on 127.0.0.1 in front of the real API, so a test can choose the moment at
 * which a request of `slipway trigger` or scripts/slipway-trigger.sh reaches the server.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxyHooks {
  /** Runs before the proxy sends a request on to the API, which waits for it to settle. */
  beforeForward?(method: string, path: string): Promise<void> | void;
  /**
   * Runs once the API's response has arrived, before the proxy sends it back, which waits for
   * it to settle. A hook that delays a trigger response delays a job that the API has created.
   */
  beforeRespond?(method: string, path: string): Promise<void> | void;
}

export interface ApiProxy {
  url: string;
  close(): Promise<void>;
}

export async function startApiProxy(target: string, hooks: ProxyHooks = {}): Promise<ApiProxy> {
  const server = http.createServer((request, response) => {
    void forward(request, response);
  });

  async function forward(request: http.IncomingMessage, response: http.ServerResponse) {
    // The request stays paused, with its body unread, until it is piped below.
    await hooks.beforeForward?.(request.method!, request.url!);
    const upstream = http.request(
      new URL(request.url!, target),
      { method: request.method, headers: request.headers },
      (answer) => {
        void (async () => {
          await hooks.beforeRespond?.(request.method!, request.url!);
          response.writeHead(answer.statusCode!, answer.headers);
          answer.pipe(response);
        })();
      },
    );
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface TriggerHold {
  proxy: ApiProxy;
  /** Resolves once the API has responded to a trigger request and the proxy keeps the response. */
  held: Promise<void>;
  /** Sends the held responses on. */
  release(): void;
  close(): Promise<void>;
}

/**
 * Starts a proxy to `target` that holds the responses of the first `count` trigger requests
 * until release() is called. The API has created each job by then.
 */
export async function holdTriggerResponses(target: string, count = 1): Promise<TriggerHold> {
  let heldCount = 0;
  let markHeld!: () => void;
  const held = new Promise<void>((resolve) => (markHeld = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const proxy = await startApiProxy(target, {
    async beforeRespond(method, path) {
      if (method !== 'POST' || !path.startsWith('/api/trigger/') || heldCount >= count) return;
      heldCount += 1;
      markHeld();
      await released;
    },
  });
  return {
    proxy,
    held,
    release,
    async close() {
      release();
      await proxy.close();
    },
  };
}
