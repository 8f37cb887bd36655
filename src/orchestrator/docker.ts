/**
 * The orchestrator's Docker client. dockerode reads DOCKER_HOST itself; the worker's
 * setting of the same name is honoured so that every role talks to the same engine.
 */
import Docker from 'dockerode';
import type { Config } from '../config/env.js';

let shared: { host: string | undefined; client: Docker } | undefined;

export function dockerClient(config: Config): Docker {
  const host = config.worker.dockerHost;
  if (shared !== undefined && shared.host === host) return shared.client;
  const client = host === undefined ? new Docker() : new Docker(dockerOptionsFor(host));
  shared = { host, client };
  return client;
}

function dockerOptionsFor(host: string): Docker.DockerOptions {
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  const url = new URL(host.replace(/^tcp:/, 'http:'));
  return { host: url.hostname, port: Number(url.port || 2375), protocol: 'http' };
}

/** Reads the HTTP status code of a dockerode error, e.g. 404 for a missing container. */
export function dockerStatus(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}
