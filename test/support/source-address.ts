/** Requests sent from a chosen loopback address, for the per-address limits. */
import http from 'node:http';

export interface SourcedResponse {
  status: number;
  retryAfter: string | undefined;
  body: Record<string, unknown>;
}

/**
 * Sends GET `path` to the server at `baseUrl` from the loopback address `from`. Linux routes
 * all of 127.0.0.0/8 to the loopback interface, so a second source address needs no other host.
 */
export function getFrom(
  baseUrl: string,
  from: string,
  path: string,
  token?: string,
): Promise<SourcedResponse> {
  const url = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const request = http.get(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        localAddress: from,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode!,
            retryAfter: response.headers['retry-after'],
            body: JSON.parse(text),
          }),
        );
      },
    );
    request.on('error', reject);
  });
}
