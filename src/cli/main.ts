#!/usr/bin/env node
/**
 * The `slipway` command's entry point. It installs the early signal handlers before it loads
 * the program, which imports every role (see stop-signals.ts).
 */
import { catchEarlySignals } from '../app/stop-signals.js';

catchEarlySignals(process.argv);
await import('./program.js');
