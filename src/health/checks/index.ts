/** Runs the probe of a check's type. */
import type { HealthCheckDefinition } from '../../pipeline/types.js';
import type { ProbeContext, ProbeResult } from '../types.js';
import { probeDatabase } from './database.js';
import { probeDocker } from './docker.js';
import { probeHttp } from './http.js';
import { probeQueue } from './queue.js';
import { probeTailscale } from './tailscale.js';
import { probeTcp } from './tcp.js';
import { probeWorkers } from './workers.js';

export function probe(check: HealthCheckDefinition, context: ProbeContext): Promise<ProbeResult> {
  switch (check.type) {
    case 'http':
      return probeHttp(check.settings, context);
    case 'tcp':
      return probeTcp(check.settings, context);
    case 'database':
      return probeDatabase(check.settings, context);
    case 'tailscale':
      return probeTailscale(check.settings, context);
    case 'docker':
      return probeDocker(check.settings, context);
    case 'workers':
      return probeWorkers(check.settings, context);
    case 'queue':
      return probeQueue(check.settings, context);
  }
}
