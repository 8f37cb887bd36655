/**
 * Runs the repository's docker-compose.yml as a throwaway project: a unique project name, an
 * env file in a temporary folder, and helpers to wait for health and to remove everything the
 * project created. Uses `docker compose` (v2) when the CLI has it, else `docker-compose` 1.29.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const COMPOSE_FILE = path.join(REPO_ROOT, 'docker-compose.yml');
const OUTPUT_LIMIT = 64 * 1024 * 1024;

/** Picks the compose program and the arguments that go before the subcommand. */
export function composeCommand(): [string, string[]] {
  try {
    execFileSync('docker', ['compose', 'version'], { stdio: 'ignore' });
    return ['docker', ['compose']];
  } catch {
    return ['docker-compose', []];
  }
}

export { freePort } from './ports.js';

/** Returns the ids of the engine's untagged images, or none when no engine responds. */
function untaggedImages(): string[] {
  try {
    const output = execFileSync('docker', ['images', '--quiet', '--filter', 'dangling=true'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return output.split('\n').filter((line) => line !== '');
  } catch {
    return [];
  }
}

export class ComposeProject {
  readonly name = `slipway-test-${randomBytes(4).toString('hex')}`;
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-compose-'));
  readonly envFile = path.join(this.dir, '.env');
  readonly #command = composeCommand();
  /**
   * Untagged images present before the project built anything. The classic builder leaves
   * each build stage of the Dockerfile as an untagged image of about 300 MB, which remove()
   * deletes.
   */
  readonly #untaggedBefore = new Set(untaggedImages());

  /** Writes the env file; every service also reads it through SLIPWAY_ENV_FILE. */
  writeEnv(values: Record<string, string>): void {
    const lines = Object.entries({ ...values, SLIPWAY_ENV_FILE: this.envFile }).map(
      ([name, value]) => `${name}=${value}`,
    );
    fs.writeFileSync(this.envFile, `${lines.join('\n')}\n`);
  }

  /** Runs one compose subcommand in the repository root and returns its output. */
  async compose(args: string[], timeoutMs = 120_000): Promise<string> {
    const [program, prefix] = this.#command;
    const full = [...prefix, '-p', this.name, '--env-file', this.envFile, '-f', COMPOSE_FILE];
    try {
      const { stdout, stderr } = await run(program, [...full, ...args], {
        cwd: REPO_ROOT,
        timeout: timeoutMs,
        maxBuffer: OUTPUT_LIMIT,
      });
      return `${stdout}${stderr}`;
    } catch (error) {
      const failed = error as Error & { stdout?: string; stderr?: string };
      const output = `${failed.stdout ?? ''}${failed.stderr ?? ''}`.slice(-8000);
      throw new Error(`${program} ${args.join(' ')} failed: ${failed.message}\n${output}`);
    }
  }

  /** Id of the service's container, or undefined when it has none. */
  async containerId(service: string): Promise<string | undefined> {
    const id = (await this.compose(['ps', '-q', service])).trim().split('\n')[0];
    return id === undefined || id === '' ? undefined : id;
  }

  /** Waits until the service's container reports `healthy`; fails early when it stops. */
  async waitHealthy(service: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no container';
    while (Date.now() < deadline) {
      const id = await this.containerId(service);
      if (id !== undefined) {
        const { stdout } = await run('docker', [
          'inspect',
          '--format',
          '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}',
          id,
        ]);
        last = stdout.trim();
        if (last.endsWith('healthy') && !last.endsWith('unhealthy')) return;
        if (last.startsWith('exited') || last.startsWith('dead')) break;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const logs = await this.compose(['logs', '--no-color', '--tail', '60']).catch(String);
    throw new Error(`${service} is not healthy (last state: ${last})\n${logs}`);
  }

  /** Removes the project's containers, networks and volumes, its images and its folder. */
  async remove(images: string[]): Promise<void> {
    await this.compose(['down', '--volumes', '--remove-orphans', '--timeout', '10']).catch(
      (error: unknown) => console.error(String(error)),
    );
    for (const image of images) {
      await run('docker', ['image', 'rm', image]).catch(() => undefined);
    }
    for (const image of untaggedImages()) {
      if (this.#untaggedBefore.has(image)) continue;
      await run('docker', ['image', 'rm', image]).catch(() => undefined);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
