/**
 * A stand-in for tailscaled's LocalAPI: an HTTP server on a unix socket that serves
 * `GET /localapi/v0/status` with the fields of tailscale's ipnstate.Status (BackendState,
 * Self.Online, TailscaleIPs, Health...). Like tailscaled, it rejects requests whose Host
 * header is not `local-tailscaled.sock`.
 */
import http from 'node:http';

export type StandInMode = 'running' | 'stopped' | 'needs-login' | 'offline' | 'warning' | 'hang';

export class TailscaleStandIn {
  mode: StandInMode = 'running';
  readonly hosts: string[] = [];
  readonly #server: http.Server;
  readonly #hanging = new Set<http.ServerResponse>();

  constructor(readonly socketPath: string) {
    this.#server = http.createServer((request, response) => this.#answer(request, response));
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.#server.listen(this.socketPath, resolve));
  }

  async close(): Promise<void> {
    for (const response of this.#hanging) response.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #answer(request: http.IncomingMessage, response: http.ServerResponse): void {
    this.hosts.push(request.headers.host ?? '');
    if (request.headers.host !== 'local-tailscaled.sock') {
      response.writeHead(403).end('invalid localapi request: wrong Host header\n');
      return;
    }
    if (request.method !== 'GET' || request.url !== '/localapi/v0/status') {
      response.writeHead(404).end('404 page not found\n');
      return;
    }
    if (this.mode === 'hang') {
      this.#hanging.add(response);
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(this.#status()));
  }

  #status(): Record<string, unknown> {
    const running = this.mode === 'running' || this.mode === 'offline' || this.mode === 'warning';
    let backendState = 'Running';
    if (this.mode === 'stopped') backendState = 'Stopped';
    if (this.mode === 'needs-login') backendState = 'NeedsLogin';
    return {
      Version: '1.76.1-t1234abcd',
      TUN: true,
      BackendState: backendState,
      HaveNodeKey: true,
      AuthURL: this.mode === 'needs-login' ? 'https://login.tailscale.invalid/a/0123456789' : '',
      TailscaleIPs: running ? ['100.101.102.103', 'fd7a:115c:a1e0::1'] : null,
      Self: {
        ID: 'nXXXXXCNTRL',
        PublicKey: 'nodekey:0000000000000000000000000000000000000000000000000000000000000000',
        HostName: 'build-host',
        DNSName: 'build-host.example-tailnet.ts.net.',
        OS: 'linux',
        UserID: 1234,
        TailscaleIPs: running ? ['100.101.102.103'] : null,
        Online: this.mode === 'running' || this.mode === 'warning',
        ExitNode: false,
        Active: false,
        InNetworkMap: true,
        InMagicSock: false,
        InEngine: false,
      },
      Health: this.mode === 'warning' ? ['not connected to home DERP region 1'] : [],
      MagicDNSSuffix: 'example-tailnet.ts.net',
      CurrentTailnet: running
        ? {
            Name: 'example-tailnet.ts.net',
            MagicDNSSuffix: 'example-tailnet.ts.net',
            MagicDNSEnabled: true,
          }
        : null,
      CertDomains: null,
      Peer: {},
      User: {},
      ClientVersion: null,
    };
  }
}
