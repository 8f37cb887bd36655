/**
 * Every environment variable Slipway reads, with its default and its rule. `loadConfig`
 * validates all of them at start and stops with a message that names the variable.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { redactUrl } from '../util/url.js';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export const ROLES = ['api', 'orchestrator', 'health-monitor', 'worker', 'all'] as const;
export type Role = (typeof ROLES)[number];

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type ExecutorChoice = 'auto' | 'docker' | 'local';

export interface Config {
  dataDir: string;
  dbPath: string;
  logPath: string;
  workspacePath: string;
  artifactsPath: string;
  backupPath: string;
  logLevel: LogLevel;
  /** Slipway's own log files in logPath are rotated by cleanup above this size. */
  logRotateBytes: number;
  mode: Role | undefined;
  pipelinesPath: string | undefined;

  api: {
    host: string;
    port: number;
    /** Number of API processes behind one port (node:cluster). */
    workers: number;
    /** Seconds a client has to send a whole request before the server responds with 408. */
    timeoutSeconds: number;
    bodyLimitBytes: number;
    /** Requests per token per minute; 0 turns rate limiting off. */
    rateLimitPerMinute: number;
    /** Failed authentications per source address per minute; 0 turns the limit off. */
    authFailureLimitPerMinute: number;
    /**
     * Addresses and CIDR ranges of reverse proxies whose X-Forwarded-For names the client;
     * empty when the header is ignored.
     */
    trustProxy: string[];
    adminToken: string | undefined;
    publicUrl: string | undefined;
    /** Milliseconds a commit may wait to be grouped with others (group commit). */
    commitDelayMs: number;
  };

  worker: {
    apiUrl: string;
    token: string | undefined;
    name: string | undefined;
    capacity: number;
    executor: ExecutorChoice;
    /** Seconds a claim keeps a task before a heartbeat must extend it. */
    leaseSeconds: number;
    dockerHost: string | undefined;
    /**
     * Milliseconds to wait for the Docker engine to respond to a request, or to confirm that a
     * killed container stopped, before treating the engine as unresponsive.
     */
    dockerTimeoutMs: number;
    /** Seconds a stopping worker waits for its tasks before it hands them back. */
    shutdownGraceSeconds: number;
    /** Local bare mirrors of the repositories, fetched for each new job. */
    mirrorPath: string;
  };

  /** Bytes kept of one task attempt's log; the rest is dropped and the cut is marked. */
  logMaxBytes: number;

  intervals: {
    healthCheckSeconds: number;
    orchestrationSeconds: number;
    cleanupSeconds: number;
    githubSyncSeconds: number;
    backupSeconds: number;
  };

  retention: {
    jobsDays: number;
    logsDays: number;
    workspacesDays: number;
    healthMetricsDays: number;
    auditLogDays: number;
    backupsKept: number;
  };

  dependencyTimeoutSeconds: number;
  /** Lease expiries a side-effect-free task may survive before it ends as error. */
  maxTaskAttempts: number;

  github: {
    token: string | undefined;
    repository: string | undefined;
    apiUrl: string;
    webhookSecret: string | undefined;
    /** Whether a pushed tag queues a ci job (GITHUB_WEBHOOK_TAGS); branch pushes always do. */
    webhookTags: boolean;
  };

  /** GitHub Actions OIDC tokens accepted as trigger tokens; undefined when not configured. */
  oidc: OidcConfig | undefined;

  /**
   * SLIPWAY_TOKEN, read here so that every command rejects an invalid one. `slipway trigger`
   * reads it with loadTriggerConfig, which ignores the other variables.
   */
  clientToken: string | undefined;

  tailscaleSocket: string;
}

/** The rules for GitHub Actions OIDC tokens that the API accepts in place of a trigger token. */
export interface OidcConfig {
  /** The `iss` claim that tokens must have (SLIPWAY_OIDC_ISSUER). */
  issuer: string;
  /** The URL of the issuer's signing keys (SLIPWAY_OIDC_JWKS_URL). */
  jwksUrl: string;
  /** The `aud` claim that tokens must have (SLIPWAY_OIDC_AUDIENCE). */
  audience: string;
  /** Repositories (`owner/name` or `owner/*`) whose workflows may trigger. */
  repositories: string[];
  /** Refs (`refs/heads/main`, or a prefix and `*`) that may trigger; undefined allows any. */
  refs: string[] | undefined;
}

type Env = Record<string, string | undefined>;

/** Shortest token Slipway accepts from the environment; generated tokens have 36 characters. */
export const MIN_TOKEN_LENGTH = 16;

/**
 * Reads a bearer token that is long enough to resist guessing and safe in a header. `issued`
 * names the command that makes such a token when the API issues it rather than accepts any.
 */
function readToken(env: Env, name: string, issued?: string): string | undefined {
  const value = readString(env, name);
  if (value === undefined) return undefined;
  if (value.length < MIN_TOKEN_LENGTH || value.length > 512) {
    const hint =
      issued === undefined
        ? 'generate one with: openssl rand -hex 24'
        : `create one with: ${issued}`;
    throw new ConfigError(
      name,
      `must be ${MIN_TOKEN_LENGTH} to 512 characters, got ${value.length}; ${hint}`,
    );
  }
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw new ConfigError(name, 'must be printable ASCII without spaces');
  }
  return value;
}

/** Shortest GITHUB_WEBHOOK_SECRET accepted; with a shorter one, signatures can be forged by trying keys. */
const MIN_WEBHOOK_SECRET_LENGTH = 16;

/**
 * Reads GITHUB_WEBHOOK_SECRET, the HMAC key that every webhook delivery is signed with. A
 * delivery can trigger jobs, so a key short enough to guess would let anyone start them.
 */
function readWebhookSecret(env: Env): string | undefined {
  const value = readString(env, 'GITHUB_WEBHOOK_SECRET');
  if (value === undefined || value.length >= MIN_WEBHOOK_SECRET_LENGTH) return value;
  throw new ConfigError(
    'GITHUB_WEBHOOK_SECRET',
    `must be at least ${MIN_WEBHOOK_SECRET_LENGTH} characters, got ${value.length}; generate ` +
      "one with: openssl rand -hex 32, and enter the same value in the webhook's settings on GitHub",
  );
}

/** Worker ids and names: what the agent API accepts in `worker_id` and `name`. */
export const WORKER_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$';

function readWorkerName(env: Env): string | undefined {
  const value = readString(env, 'SLIPWAY_WORKER_NAME');
  if (value === undefined || new RegExp(WORKER_ID_PATTERN).test(value)) return value;
  throw new ConfigError(
    'SLIPWAY_WORKER_NAME',
    'must be a letter or digit followed by up to 99 letters, digits, underscores, dots, @ or ' +
      `dashes, got "${value}"`,
  );
}

function readString(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  return trimmed === '' ? undefined : trimmed;
}

/**
 * Returns the resolved database path, rejecting one that names a folder: path.resolve drops a
 * trailing "/", and SQLite would then create a database file where the operator meant a folder.
 */
function readDatabasePath(env: Env, resolved: string): string {
  const raw = readString(env, 'ORCHESTRATION_DB_PATH');
  const isFolder =
    raw !== undefined &&
    (/[/\\]$/.test(raw) || (fs.existsSync(resolved) && fs.statSync(resolved).isDirectory()));
  if (isFolder) {
    throw new ConfigError(
      'ORCHESTRATION_DB_PATH',
      `must name the database file, not a folder, got "${raw}"; for example ${path.join(raw, 'orchestration.db')}`,
    );
  }
  return resolved;
}

function readInteger(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = readString(env, name);
  if (raw === undefined) return fallback;
  if (!/^-?\d+$/.test(raw)) {
    throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  }
  const value = Number(raw);
  if (value < min || value > max) {
    // The text as given: Number() would show a long value as 1e+23.
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${raw}`);
  }
  return value;
}

function readChoice<T extends string>(
  env: Env,
  name: string,
  choices: readonly T[],
  aliases: Record<string, T> = {},
): T | undefined {
  const raw = readString(env, name);
  if (raw === undefined) return undefined;
  const lowered = raw.toLowerCase();
  const aliased = aliases[lowered];
  if (aliased) return aliased;
  if ((choices as readonly string[]).includes(lowered)) return lowered as T;
  throw new ConfigError(name, `must be one of ${describeChoices(choices, aliases)}, got "${raw}"`);
}

/** Lists every accepted value, each alias after its choice: "warn (or warning), error". */
function describeChoices(choices: readonly string[], aliases: Record<string, string>): string {
  const described = choices.map((choice) => {
    const others = Object.keys(aliases).filter((alias) => aliases[alias] === choice);
    return others.length === 0 ? choice : `${choice} (or ${others.join(', ')})`;
  });
  return described.join(', ');
}

function readBoolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = readString(env, name);
  if (raw === undefined) return fallback;
  const lowered = raw.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(lowered)) return true;
  if (['0', 'false', 'no', 'off'].includes(lowered)) return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

/**
 * Reads an http(s) URL. With `credentials` false, a URL with a user name or password is
 * rejected: SLIPWAY_PUBLIC_URL goes into links that GitHub shows, and GITHUB_API_URL goes to
 * Octokit, whose fetch rejects such a URL.
 */
function readUrl(env: Env, name: string, fallback: string, credentials = true): string {
  const raw = readString(env, name) ?? fallback;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be an absolute http(s) URL, got "${redactUrl(raw)}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(name, `must be an http or https URL, got "${redactUrl(raw)}"`);
  }
  if (!credentials && (url.username !== '' || url.password !== '')) {
    throw new ConfigError(
      name,
      `must not contain a user name or password, got "${redactUrl(raw)}"; remove the part ` +
        'before "@"',
    );
  }
  return raw.replace(/\/+$/, '');
}

/**
 * Reads a base URL that Slipway appends paths to, such as `/api/job/ID`. A query or fragment
 * would end up in front of the appended path, so it is rejected.
 */
function readBaseUrl(env: Env, name: string, fallback: string, credentials = true): string {
  const value = readUrl(env, name, fallback, credentials);
  if (/[?#]/.test(value)) {
    throw new ConfigError(
      name,
      `must not contain a query or fragment, because paths are appended to it, got ` +
        `"${redactUrl(value)}"; remove the part from "?" or "#" on`,
    );
  }
  return value;
}

/** A host name (RFC 1123 labels) or an IPv4 or IPv6 address. */
const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * A last label that is a decimal or 0x number. URLs read such a host as an IPv4 address
 * (WHATWG URL Standard, "ends in a number"), so `999.1.1.1` or `host.123` is no host name.
 */
const NUMERIC_LAST_LABEL = /(?:^|\.)(?:\d+|0x[0-9a-f]*)$/i;

function readHost(env: Env): string {
  const raw = readString(env, 'API_HOST');
  if (raw === undefined) return '127.0.0.1';
  if (net.isIP(raw) !== 0) return raw;
  if (NUMERIC_LAST_LABEL.test(raw)) {
    throw new ConfigError(
      'API_HOST',
      `must be an IPv4 address of four numbers from 0 to 255, such as 127.0.0.1, got "${raw}"`,
    );
  }
  if (!HOSTNAME.test(raw)) {
    throw new ConfigError(
      'API_HOST',
      'must be an IPv4 address, an IPv6 address or a DNS host name ' +
        `(labels of letters, digits and inner hyphens, separated by dots), got "${raw}"`,
    );
  }
  return raw;
}

/**
 * Builds the URL a worker on the same host uses by default. API_HOST accepts an IPv6 address
 * with a zone ID (`fe80::1%eth0`), but URLs cannot contain one, so it needs SLIPWAY_API_URL.
 */
function defaultApiUrl(host: string, port: number): string {
  const url = `http://${localAddress(host)}:${port}`;
  if (URL.canParse(url)) return url;
  throw new ConfigError(
    'API_HOST',
    `"${host}" cannot be used in a URL, so set SLIPWAY_API_URL for the workers`,
  );
}

/** Returns the address a worker on the same host uses to reach an API listening on `host`. */
function localAddress(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return net.isIPv6(host) ? `[${host}]` : host;
}

/** Names of address ranges that Fastify's trustProxy (@fastify/proxy-addr) accepts. */
const PROXY_RANGE_NAMES = ['loopback', 'linklocal', 'uniquelocal'];

/**
 * Reads API_TRUST_PROXY: a comma-separated list of IP addresses, CIDR ranges and the names
 * loopback, linklocal and uniquelocal. Ranges wider than MIN_PROXY_PREFIX are rejected, because
 * clients in them could set their own address with X-Forwarded-For and escape the per-address
 * limits.
 */
function readTrustedProxies(env: Env): string[] {
  const raw = readString(env, 'API_TRUST_PROXY');
  if (raw === undefined) return [];
  const entries = raw.split(',').map((entry) => entry.trim());
  for (const entry of entries) {
    const problem = proxyEntryProblem(entry);
    if (problem !== undefined) {
      throw new ConfigError(
        'API_TRUST_PROXY',
        `${problem}; list the addresses or CIDR ranges of your reverse proxies, separated by ` +
          `commas, such as "127.0.0.1,10.0.0.0/8", or the names ${PROXY_RANGE_NAMES.join(', ')}; ` +
          `got "${raw}"`,
      );
    }
  }
  return entries;
}

/**
 * Shortest prefixes that API_TRUST_PROXY accepts: the widest private ranges, 10.0.0.0/8 and
 * fc00::/7. A wider range is no proxy network in practice, and it lets every client in it choose
 * its own address, also when two of them together cover everything (0.0.0.0/1,128.0.0.0/1).
 */
const MIN_PROXY_PREFIX = { 4: 8, 6: 7 } as const;

/** The first IPv4-mapped IPv6 address, ::ffff:0.0.0.0, which starts ::ffff:0:0/96. */
const FIRST_IPV4_MAPPED = '::ffff:0:0';

/** Returns why one entry of API_TRUST_PROXY is invalid, or undefined when it is valid. */
function proxyEntryProblem(entry: string): string | undefined {
  if (entry === '') return 'contains an empty entry';
  if (PROXY_RANGE_NAMES.includes(entry)) return undefined;
  const [address, prefix, extra] = entry.split('/');
  const version = net.isIP(address!) as 0 | 4 | 6;
  if (version === 0 || extra !== undefined) {
    return `"${entry}" is not an IP address or a CIDR range`;
  }
  if (prefix === undefined) return undefined;
  const maxPrefix = version === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > maxPrefix) {
    return `"${entry}" has an invalid prefix length; use 0 to ${maxPrefix} after the slash`;
  }
  const bits = Number(prefix);
  if (bits < MIN_PROXY_PREFIX[version]) {
    return (
      `"${entry}" is wider than /${MIN_PROXY_PREFIX[version]}, which no proxy network is, ` +
      'and every client in it could choose its own address'
    );
  }
  if (version === 6 && coversIpv4Slash8(address!, bits)) {
    // proxy-addr (@fastify/proxy-addr 5.1) matches an IPv4 client against an IPv6 range as
    // ::ffff:a.b.c.d, so such a range trusts IPv4 clients too.
    return (
      `"${entry}" contains more than a /8 of IPv4-mapped addresses (::ffff:0:0/96), ` +
      'and every IPv4 client in them could choose its own address'
    );
  }
  return undefined;
}

/**
 * Returns whether the IPv6 range `address`/`bits` contains more IPv4-mapped addresses than one
 * IPv4 /8. A range at least as wide as ::ffff:0:0/96 that contains its start contains all of
 * them. A range inside it with a prefix below /104 contains an IPv4 range wider than /8.
 */
function coversIpv4Slash8(address: string, bits: number): boolean {
  const range = new net.BlockList();
  range.addSubnet(address, bits, 'ipv6');
  if (bits <= 96) return range.check(FIRST_IPV4_MAPPED, 'ipv6');
  const mapped = new net.BlockList();
  mapped.addSubnet(FIRST_IPV4_MAPPED, 96, 'ipv6');
  return bits < 96 + MIN_PROXY_PREFIX[4] && mapped.check(address, 'ipv6');
}

/** Reads DOCKER_HOST, which must use one of Docker's schemes: unix, tcp, http(s), ssh or npipe. */
function readDockerHost(env: Env): string | undefined {
  const raw = readString(env, 'DOCKER_HOST');
  if (raw === undefined) return undefined;
  if (!/^(unix|tcp|http|https|ssh|npipe):\/\/./.test(raw)) {
    throw new ConfigError(
      'DOCKER_HOST',
      `must start with unix://, tcp://, http://, https://, ssh:// or npipe://, got "${raw}"`,
    );
  }
  return raw;
}

const GITHUB_OIDC_ISSUER = 'https://token.actions.githubusercontent.com';

/**
 * Reads the OIDC settings. SLIPWAY_OIDC_AUDIENCE turns the feature on. The repositories
 * default to GITHUB_REPOSITORY, and a configuration that allows no repository is rejected.
 */
function readOidc(env: Env, repository: string | undefined): OidcConfig | undefined {
  const audience = readString(env, 'SLIPWAY_OIDC_AUDIENCE');
  const issuer = readUrl(env, 'SLIPWAY_OIDC_ISSUER', GITHUB_OIDC_ISSUER, false);
  const jwksUrl = readUrl(env, 'SLIPWAY_OIDC_JWKS_URL', `${issuer}/.well-known/jwks`, false);
  requireHttpsUnlessLoopback('SLIPWAY_OIDC_JWKS_URL', jwksUrl);

  const repositories = readList(env, 'SLIPWAY_OIDC_REPOSITORIES');
  const refs = readList(env, 'SLIPWAY_OIDC_REFS');
  for (const name of repositories ?? []) {
    if (!/^[A-Za-z0-9_.-]+\/(?:[A-Za-z0-9_.-]+|\*)$/.test(name)) {
      throw new ConfigError(
        'SLIPWAY_OIDC_REPOSITORIES',
        `must be a comma-separated list of "owner/name" or "owner/*", got "${name}"`,
      );
    }
  }
  for (const ref of refs ?? []) {
    if (!/^refs\/\S+$/.test(ref) || ref.slice(0, -1).includes('*')) {
      throw new ConfigError(
        'SLIPWAY_OIDC_REFS',
        'must be a comma-separated list of refs such as refs/heads/main, each with at most ' +
          `one * at its end, got "${ref}"`,
      );
    }
  }

  if (audience === undefined) {
    const set = [
      'SLIPWAY_OIDC_REPOSITORIES',
      'SLIPWAY_OIDC_REFS',
      'SLIPWAY_OIDC_ISSUER',
      'SLIPWAY_OIDC_JWKS_URL',
    ].find((name) => readString(env, name) !== undefined);
    if (set !== undefined) {
      throw new ConfigError(
        'SLIPWAY_OIDC_AUDIENCE',
        `must be set when ${set} is, because OIDC tokens are accepted only for an audience`,
      );
    }
    return undefined;
  }

  const allowed = repositories ?? (repository === undefined ? [] : [repository]);
  if (allowed.length === 0) {
    throw new ConfigError(
      'SLIPWAY_OIDC_REPOSITORIES',
      'must name the repositories whose workflows may trigger (owner/name, comma-separated) ' +
        'when SLIPWAY_OIDC_AUDIENCE is set, or set GITHUB_REPOSITORY',
    );
  }
  return { issuer, jwksUrl, audience, repositories: allowed, refs };
}

/**
 * Rejects a plain-http URL to another host, because any host on the network path could then
 * serve its own keys and sign tokens that the API accepts. A loopback address stays on the host.
 */
function requireHttpsUnlessLoopback(name: string, raw: string): void {
  const url = new URL(raw);
  const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  if (url.protocol === 'http:' && !loopback) {
    throw new ConfigError(
      name,
      `must be an https URL (http only to a loopback address), got "${redactUrl(raw)}"`,
    );
  }
}

/** Reads a comma-separated list, or undefined when the variable is unset or empty. */
function readList(env: Env, name: string): string[] | undefined {
  const raw = readString(env, name);
  if (raw === undefined) return undefined;
  const items = raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  return items.length === 0 ? undefined : items;
}

function readRepository(env: Env): string | undefined {
  const raw = readString(env, 'GITHUB_REPOSITORY');
  if (raw === undefined) return undefined;
  if (!/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(raw)) {
    throw new ConfigError('GITHUB_REPOSITORY', `must be "owner/name", got "${raw}"`);
  }
  return raw;
}

const DAY_MAX = 36_500;
const SECONDS_MAX = 7 * 24 * 3600;

/** Reads and validates the environment. Throws ConfigError naming the first invalid variable. */
/** The settings `slipway trigger` uses: where the API is, and how to authenticate. */
export interface TriggerConfig {
  apiUrl: string;
  /** SLIPWAY_TOKEN, a token with the `trigger` role. */
  token: string | undefined;
  /** The audience of the GitHub Actions OIDC tokens sent when no token is set (SLIPWAY_OIDC_AUDIENCE). */
  oidcAudience: string | undefined;
}

/**
 * Reads only the variables that `slipway trigger` uses. It runs in a workflow's environment,
 * which may set variables such as LOG_LEVEL for the application under test. A value there that
 * a Slipway server would reject must not stop the command.
 */
export function loadTriggerConfig(env: Env = process.env): TriggerConfig {
  const apiUrl =
    readString(env, 'SLIPWAY_API_URL') === undefined
      ? defaultApiUrl(readHost(env), readInteger(env, 'API_PORT', 5000, 0, 65535))
      : readBaseUrl(env, 'SLIPWAY_API_URL', '');
  return {
    apiUrl,
    token: readToken(env, 'SLIPWAY_TOKEN', 'slipway token create --name NAME --role trigger'),
    oidcAudience: readString(env, 'SLIPWAY_OIDC_AUDIENCE'),
  };
}

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const dataDir = path.resolve(cwd, readString(env, 'SLIPWAY_DATA_DIR') ?? 'data');
  const inData = (name: string, fallback: string) =>
    path.resolve(cwd, readString(env, name) ?? path.join(dataDir, fallback));

  const port = readInteger(env, 'API_PORT', 5000, 0, 65535);
  const host = readHost(env);
  const pipelines = readString(env, 'SLIPWAY_PIPELINES');

  return {
    dataDir,
    dbPath: readDatabasePath(env, inData('ORCHESTRATION_DB_PATH', 'state/orchestration.db')),
    logPath: inData('ORCHESTRATION_LOG_PATH', 'logs'),
    workspacePath: inData('ORCHESTRATION_WORKSPACE_PATH', 'workspaces'),
    artifactsPath: inData('ORCHESTRATION_ARTIFACTS_PATH', 'artifacts'),
    backupPath: inData('ORCHESTRATION_BACKUP_PATH', 'backups'),
    logLevel:
      readChoice(env, 'LOG_LEVEL', LOG_LEVELS, {
        warning: 'warn',
        critical: 'fatal',
      }) ?? 'info',
    logRotateBytes: readInteger(env, 'SLIPWAY_LOG_ROTATE_BYTES', 10 * 1024 * 1024, 1024, 2 ** 40),
    mode: readChoice(env, 'ORCHESTRATION_MODE', ROLES),
    pipelinesPath: pipelines === undefined ? undefined : path.resolve(cwd, pipelines),

    api: {
      host,
      port,
      workers: readInteger(env, 'API_WORKERS', 1, 1, 64),
      timeoutSeconds: readInteger(env, 'API_TIMEOUT', 120, 1, 3600),
      bodyLimitBytes: readInteger(env, 'API_BODY_LIMIT', 1024 * 1024, 1024, 64 * 1024 * 1024),
      rateLimitPerMinute: readInteger(env, 'API_RATE_LIMIT', 60_000, 0, 100_000_000),
      authFailureLimitPerMinute: readInteger(env, 'API_AUTH_FAILURE_LIMIT', 60, 0, 100_000_000),
      trustProxy: readTrustedProxies(env),
      adminToken: readToken(env, 'SLIPWAY_ADMIN_TOKEN'),
      publicUrl:
        readString(env, 'SLIPWAY_PUBLIC_URL') === undefined
          ? undefined
          : readBaseUrl(env, 'SLIPWAY_PUBLIC_URL', '', false),
      commitDelayMs: readInteger(env, 'API_COMMIT_DELAY_MS', 0, 0, 1000),
    },

    worker: {
      apiUrl:
        readString(env, 'SLIPWAY_API_URL') === undefined
          ? defaultApiUrl(host, port)
          : readBaseUrl(env, 'SLIPWAY_API_URL', ''),
      token: readToken(env, 'SLIPWAY_AGENT_TOKEN'),
      name: readWorkerName(env),
      capacity: readInteger(env, 'SLIPWAY_WORKER_CAPACITY', 2, 1, 256),
      executor: readChoice(env, 'SLIPWAY_EXECUTOR', ['auto', 'docker', 'local'] as const) ?? 'auto',
      leaseSeconds: readInteger(env, 'SLIPWAY_LEASE_SECONDS', 30, 2, 3600),
      dockerHost: readDockerHost(env),
      dockerTimeoutMs: readInteger(env, 'SLIPWAY_DOCKER_TIMEOUT_SECONDS', 60, 1, 3600) * 1000,
      shutdownGraceSeconds: readInteger(env, 'SLIPWAY_WORKER_SHUTDOWN_SECONDS', 20, 0, 3600),
      mirrorPath: inData('SLIPWAY_MIRROR_PATH', 'mirrors'),
    },

    logMaxBytes: readInteger(env, 'SLIPWAY_LOG_MAX_BYTES', 10 * 1024 * 1024, 1024, 2 ** 40),

    intervals: {
      healthCheckSeconds: readInteger(env, 'HEALTH_CHECK_INTERVAL', 300, 1, SECONDS_MAX),
      orchestrationSeconds: readInteger(env, 'ORCHESTRATION_INTERVAL', 900, 1, SECONDS_MAX),
      cleanupSeconds: readInteger(env, 'CLEANUP_INTERVAL', 1800, 1, SECONDS_MAX),
      githubSyncSeconds: readInteger(env, 'GITHUB_SYNC_INTERVAL', 900, 0, SECONDS_MAX),
      backupSeconds: readInteger(env, 'BACKUP_INTERVAL', 86_400, 0, SECONDS_MAX),
    },

    retention: {
      jobsDays: readInteger(env, 'RETENTION_JOBS_DAYS', 90, 1, DAY_MAX),
      logsDays: readInteger(env, 'RETENTION_LOGS_DAYS', 30, 1, DAY_MAX),
      workspacesDays: readInteger(env, 'RETENTION_WORKSPACES_DAYS', 2, 1, DAY_MAX),
      healthMetricsDays: readInteger(env, 'RETENTION_HEALTH_METRICS_DAYS', 14, 1, DAY_MAX),
      auditLogDays: readInteger(env, 'RETENTION_AUDIT_LOG_DAYS', 365, 1, DAY_MAX),
      backupsKept: readInteger(env, 'BACKUP_KEEP', 7, 1, 1000),
    },

    dependencyTimeoutSeconds: readInteger(env, 'DEPENDENCY_TIMEOUT', 6 * 3600, 1, SECONDS_MAX),
    maxTaskAttempts: readInteger(env, 'SLIPWAY_MAX_TASK_ATTEMPTS', 3, 1, 100),

    github: {
      token: readString(env, 'GITHUB_TOKEN'),
      repository: readRepository(env),
      apiUrl: readBaseUrl(env, 'GITHUB_API_URL', 'https://api.github.com', false),
      webhookSecret: readWebhookSecret(env),
      webhookTags: readBoolean(env, 'GITHUB_WEBHOOK_TAGS', false),
    },

    oidc: readOidc(env, readRepository(env)),

    clientToken: readToken(env, 'SLIPWAY_TOKEN', 'slipway token create --name NAME --role trigger'),

    tailscaleSocket: readString(env, 'TAILSCALE_SOCKET') ?? '/var/run/tailscale/tailscaled.sock',
  };
}
