/**
 * The `slipway` command: one subcommand per role and the operator's tools.
 * Exit codes: 0 success, 1 failure, 2 bad usage or configuration.
 */
import { Command, CommanderError } from 'commander';
import { registerOrchestratorCommands } from './orchestrator.js';
import { registerRoleCommands } from './roles.js';
import { registerTokenCommands } from './tokens.js';
import { registerTriggerCommands } from './trigger.js';
import { redactUrls } from '../util/url.js';
import { CliError } from './run.js';

export const program = new Command('slipway')
  .description('Self-hosted CI/CD execution plane')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

registerRoleCommands(program);
registerTokenCommands(program);
registerOrchestratorCommands(program);
registerTriggerCommands(program);

// `slipway token list | head` closes the pipe early; that is not an error of ours.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else {
    process.exitCode = error instanceof CliError ? error.exitCode : 1;
    if (!(error instanceof CliError && error.reported)) {
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`slipway: ${redactUrls(message)}\n`);
    }
  }
}
