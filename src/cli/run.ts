/** Shared pieces of the CLI: configuration loading with clear errors, and exit codes. */
import { ConfigError, loadConfig, type Config } from '../config/env.js';
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

export function loadCliConfig(): Config {
  try {
    return loadConfig();
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
    throw error;
  }
}
