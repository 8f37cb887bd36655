#!/usr/bin/env node
/**
 * The `slipway` command's entry point. It checks the limit on open files and installs the
 * early signal handlers before it loads the program, which imports every role (see
 * stop-signals.ts).
 */
import { catchEarlySignals } from '../app/stop-signals.js';
import { openFilesLimit, openFilesProblem } from './open-files.js';

const problem = openFilesProblem(openFilesLimit());
if (problem !== undefined) {
  process.stderr.write(problem);
  process.exit(2);
}
catchEarlySignals(process.argv);
await import('./program.js');
