/**
 * Reads the kills that the Docker engine recorded for a container. The engine records a `kill`
 * event, with the signal number in its `signal` attribute, for each signal sent through its API:
 * `docker kill`, `docker stop`, `docker rm -f` and the engine stopping its containers. A process
 * inside the container that signals another one, or the kernel's OOM killer, causes no `kill`
 * event. So the events tell a container killed from outside from a step that killed its own
 * script. Checked on Docker Engine 20.10.
 *
 * The executor watches a container's events from before its start (KillWatch), because the
 * engine keeps only its latest events. Reading them after the exit (engineKillSignals) is the
 * fallback for a watch that could not start or broke.
 */
import os from 'node:os';
import type Docker from 'dockerode';
import { engineCall } from './engine-calls.js';

interface EngineEvent {
  Action?: string;
  Actor?: { Attributes?: Record<string, string> };
}

/**
 * A subscription to one container's `kill` and `die` events, opened before the container
 * starts. The engine sends one connection's events in order, so once the `die` event of the
 * exit has arrived, every kill before the exit has arrived too.
 */
export class KillWatch {
  readonly #signals: number[] = [];
  readonly #close = new AbortController();
  #buffer = '';
  #died = false;
  #ended = false;
  #wake: () => void = () => undefined;

  private constructor() {}

  /**
   * Opens the subscription. Throws when the engine does not respond within `timeoutMs`, or
   * when `stop` (the run's cancel or timeout) fires first.
   */
  static async start(
    docker: Docker,
    containerId: string,
    timeoutMs: number,
    stop?: AbortSignal,
  ): Promise<KillWatch> {
    const watch = new KillWatch();
    const stream = await engineCall(
      "the request for the container's events",
      timeoutMs,
      (abortSignal) =>
        docker.getEvents({
          filters: { type: ['container'], container: [containerId], event: ['kill', 'die'] },
          abortSignal,
        }),
      stop === undefined ? watch.#close.signal : AbortSignal.any([watch.#close.signal, stop]),
    );
    stream.on('data', (chunk: Buffer) => watch.#read(String(chunk)));
    const end = () => {
      watch.#ended = true;
      watch.#wake();
    };
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
    return watch;
  }

  /**
   * Returns the signals of the kills before the container's exit, oldest first, once the `die`
   * event arrived. Returns undefined when it did not arrive within `waitMs` or the subscription
   * ended before, because the result could then miss a kill.
   */
  async signalsAfterExit(waitMs: number): Promise<number[] | undefined> {
    if (!this.#died && !this.#ended) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.#died ? [...this.#signals] : undefined;
  }

  /** Closes the subscription. */
  close(): void {
    this.#close.abort();
  }

  #read(text: string): void {
    const lines = (this.#buffer + text).split('\n');
    this.#buffer = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '' || this.#died) continue;
      let event: EngineEvent;
      try {
        event = JSON.parse(line) as EngineEvent;
      } catch {
        // An event that cannot be read may have been a kill, so the result is incomplete.
        this.#ended = true;
        this.close();
        return;
      }
      if (event.Action === 'die') {
        this.#died = true;
        this.#wake();
        continue;
      }
      const signal =
        event.Action === 'kill' ? signalNumber(event.Actor?.Attributes?.signal) : undefined;
      if (signal !== undefined) this.#signals.push(signal);
    }
  }
}

/**
 * Returns the signal numbers of the `kill` events that the engine recorded for the container,
 * oldest first. Call it after the container exited. The engine logs a kill event while it holds
 * the container's lock, before it records the exit (moby's daemon/kill.go), so every kill that
 * ended the container is in the result.
 *
 * The engine keeps only its latest events (256 in moby's daemon/events), so a kill that more
 * than 256 events of other containers followed before this call is missed. So this is only
 * the fallback of KillWatch.
 */
export async function engineKillSignals(
  docker: Docker,
  containerId: string,
  timeoutMs: number,
): Promise<number[]> {
  // The end of the range must be in the engine's clock: an end in the engine's future would
  // hold the response open until then, and the worker's clock may differ from the engine's.
  // dockerode's info() takes an abort signal, which its types leave out.
  const withSignal = docker as unknown as {
    info(options: { abortSignal: AbortSignal }): Promise<unknown>;
  };
  const info = (await engineCall('the request for its clock', timeoutMs, (abortSignal) =>
    withSignal.info({ abortSignal }),
  )) as { SystemTime: string };
  const until = (Date.parse(info.SystemTime) + 1) / 1000;
  // The events up to `until` end the response, so the whole read gets one time limit.
  const text = await engineCall(
    "the request for the container's events",
    timeoutMs,
    async (abortSignal) => {
      const stream = await docker.getEvents({
        // Since 0 reads every event the engine still keeps. They are all from this run, because
        // the container was created for it.
        since: 0,
        until,
        filters: { type: ['container'], container: [containerId], event: ['kill'] },
        abortSignal,
      });
      let read = '';
      for await (const chunk of stream) read += String(chunk);
      return read;
    },
  );
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as EngineEvent)
    .filter((event) => event.Action === 'kill')
    .map((event) => signalNumber(event.Actor?.Attributes?.signal))
    .filter((signal): signal is number => signal !== undefined);
}

/** Converts a kill event's signal attribute, a number in Docker 20.10, or a name, to its number. */
function signalNumber(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  const name = value.toUpperCase();
  const signals = os.constants.signals as Record<string, number>;
  return signals[name] ?? signals[`SIG${name}`];
}
