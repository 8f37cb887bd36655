/** Shared pieces of the CLI: configuration loading with clear errors, and exit codes. */
import os from 'node:os';
import { prepareDirectories } from '../config/directories.js';
import {
  ConfigError,
  loadConfig,
  loadTriggerConfig,
  type Config,
  type TriggerConfig,
} from '../config/env.js';
import { PipelineFileError } from '../pipeline/load.js';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly reported = false,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Turns a ConfigError into the CLI's exit code 2; other errors pass through. */
function asCliError(error: unknown): unknown {
  return error instanceof ConfigError ? new CliError(`configuration: ${error.message}`, 2) : error;
}

/** Loads the configuration of a long-running role and creates its directories. */
export function loadRoleConfig(): Config {
  const config = loadCliConfig();
  try {
    prepareDirectories(config);
  } catch (error) {
    throw asCliError(error);
  }
  return config;
}

export function loadCliConfig(): Config {
  return withCliErrors(() => loadConfig());
}

export function loadCliTriggerConfig(): TriggerConfig {
  return withCliErrors(() => loadTriggerConfig());
}

function withCliErrors<T>(load: () => T): T {
  try {
    return load();
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(`configuration: ${error.message}`, 2);
    throw error;
  }
}

/** Runs a command body, turning configuration and pipeline errors into exit code 2. */
export async function runCommand(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    if (error instanceof PipelineFileError) throw new CliError(error.message, 2);
    throw asCliError(error);
  }
}

/** Returns the audit context of a CLI command: the actor is the user who ran it. */
export function cliAudit(): { actor: string; source: string } {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    // A uid without an entry in /etc/passwd, as in some containers, has no name.
    user = `uid ${process.getuid?.() ?? 'unknown'}`;
  }
  return { actor: `cli:${user}`, source: 'cli' };
}
