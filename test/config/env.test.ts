import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareDirectories } from '../../src/config/directories.js';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import { ensureBuilt, runCli, type CliResult } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const ENV_SOURCE = fileURLToPath(new URL('../../src/config/env.ts', import.meta.url));

/** One invalid value for every variable that has a rule. */
const BAD_VALUES: Record<string, string> = {
  API_PORT: '70000',
  API_HOST: 'not a host!',
  API_WORKERS: '0',
  API_TIMEOUT: '-5',
  API_BODY_LIMIT: '1kb',
  API_RATE_LIMIT: '-1',
  API_AUTH_FAILURE_LIMIT: 'ten',
  API_TRUST_PROXY: '127.0.0.1,proxy.example',
  API_COMMIT_DELAY_MS: '5000',
  SLIPWAY_PUBLIC_URL: 'ftp://example.test',
  LOG_LEVEL: 'loud',
  ORCHESTRATION_MODE: 'everything',
  SLIPWAY_API_URL: 'not a url',
  SLIPWAY_WORKER_CAPACITY: '0',
  SLIPWAY_WORKER_NAME: 'bad name/x',
  SLIPWAY_EXECUTOR: 'kubernetes',
  SLIPWAY_LEASE_SECONDS: '1',
  SLIPWAY_WORKER_SHUTDOWN_SECONDS: '1h',
  SLIPWAY_DOCKER_TIMEOUT_SECONDS: '0',
  SLIPWAY_LOG_MAX_BYTES: '10',
  SLIPWAY_LOG_ROTATE_BYTES: '1MB',
  SLIPWAY_ADMIN_TOKEN: 'short',
  SLIPWAY_AGENT_TOKEN: 'has a space in the middle',
  SLIPWAY_TOKEN: 'tiny',
  GITHUB_WEBHOOK_TAGS: 'maybe',
  GITHUB_WEBHOOK_SECRET: 'short-secret',
  HEALTH_CHECK_INTERVAL: '0',
  ORCHESTRATION_INTERVAL: '5m',
  CLEANUP_INTERVAL: '99999999',
  GITHUB_SYNC_INTERVAL: '-1',
  BACKUP_INTERVAL: 'daily',
  RETENTION_JOBS_DAYS: '0',
  RETENTION_LOGS_DAYS: '1.5',
  RETENTION_WORKSPACES_DAYS: 'two',
  RETENTION_HEALTH_METRICS_DAYS: '0',
  RETENTION_AUDIT_LOG_DAYS: '100000',
  BACKUP_KEEP: '0',
  DEPENDENCY_TIMEOUT: '0',
  SLIPWAY_MAX_TASK_ATTEMPTS: '0',
  GITHUB_REPOSITORY: 'just-a-name',
  GITHUB_API_URL: 'api.github.com',
  DOCKER_HOST: 'localhost:2375',
  SLIPWAY_OIDC_ISSUER: 'token.actions.githubusercontent.com',
  SLIPWAY_OIDC_JWKS_URL: 'file:///etc/jwks.json',
  SLIPWAY_OIDC_REPOSITORIES: 'octo-org',
  SLIPWAY_OIDC_REFS: 'main',
  // Paths below a regular file cannot be created.
  SLIPWAY_DATA_DIR: '{file}/data',
  ORCHESTRATION_DB_PATH: '{file}/state/orchestration.db',
  ORCHESTRATION_LOG_PATH: '{file}/logs',
  ORCHESTRATION_WORKSPACE_PATH: '{file}/workspaces',
  ORCHESTRATION_ARTIFACTS_PATH: '{file}/artifacts',
  ORCHESTRATION_BACKUP_PATH: '{file}/backups',
  SLIPWAY_MIRROR_PATH: '{file}/mirrors',
};

/** Secrets, which an error describes by their length or rule and never shows. */
const SECRETS = new Set([
  'SLIPWAY_ADMIN_TOKEN',
  'SLIPWAY_AGENT_TOKEN',
  'SLIPWAY_TOKEN',
  'GITHUB_WEBHOOK_SECRET',
]);

/** Variables that take any text: secrets, names and paths checked when they are used. */
const FREE_FORM = new Set([
  'GITHUB_TOKEN',
  // The health monitor reports a missing socket as unhealthy; tailscaled may start later.
  'TAILSCALE_SOCKET',
  // Checked by the pipeline loader; see the pipeline file tests below.
  'SLIPWAY_PIPELINES',
  // Any value that GitHub Actions tokens are requested for, such as the API's URL.
  'SLIPWAY_OIDC_AUDIENCE',
]);

/** Runs up to `limit` promises at a time, keeping results in input order. */
async function mapLimited<T, R>(items: T[], limit: number, run: (item: T) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lanes = Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await run(items[index]!);
    }
  });
  await Promise.all(lanes);
  return results;
}

/** One variable for each kind of rule, run through the real `slipway serve` process. */
const THROUGH_SERVE = [
  'API_PORT',
  'API_HOST',
  'LOG_LEVEL',
  'SLIPWAY_PUBLIC_URL',
  'GITHUB_REPOSITORY',
  'DOCKER_HOST',
  'RETENTION_LOGS_DAYS',
  'SLIPWAY_DATA_DIR',
  'ORCHESTRATION_LOG_PATH',
];

describe('configuration at start', () => {
  let dataDir: string;
  let plainFile: string;
  const outcomes = new Map<string, CliResult>();

  const badValue = (variable: string) => BAD_VALUES[variable]!.replace('{file}', plainFile);
  /** What the message must show: the value, or for a path the file that blocks it. */
  const shownValue = (variable: string) =>
    BAD_VALUES[variable]!.startsWith('{file}') ? plainFile : BAD_VALUES[variable]!;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-config-');
    plainFile = path.join(dataDir, 'plain-file');
    fs.writeFileSync(plainFile, 'not a directory\n');
    const results = await mapLimited(THROUGH_SERVE, 3, (variable) =>
      runCli(['serve'], {
        SLIPWAY_DATA_DIR: path.join(dataDir, 'ok'),
        API_PORT: '0',
        LOG_LEVEL: 'warn',
        [variable]: badValue(variable),
      }),
    );
    THROUGH_SERVE.forEach((variable, index) => outcomes.set(variable, results[index]!));
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('every variable in env.ts has a case here', () => {
    const source = fs.readFileSync(ENV_SOURCE, 'utf8');
    const named = new Set(
      [...source.matchAll(/\(\s*env,\s*'([A-Z][A-Z0-9_]+)'/g)].map((match) => match[1]!),
    );
    expect(named.size).toBeGreaterThan(30);
    const uncovered = [...named].filter((name) => !(name in BAD_VALUES) && !FREE_FORM.has(name));
    expect(uncovered).toEqual([]);
  });

  // The checks `slipway serve` runs before anything else: loadConfig, then prepareDirectories.
  it.each(Object.keys(BAD_VALUES))('%s with a bad value is rejected by name', (variable) => {
    const env = { SLIPWAY_DATA_DIR: path.join(dataDir, 'ok'), [variable]: badValue(variable) };
    let thrown: unknown;
    try {
      prepareDirectories(loadConfig(env));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).variable).toBe(variable);
    expect((thrown as ConfigError).message).toMatch(new RegExp(`^${variable}: `));
    // A token is a secret: the message names its length or rule, never the value.
    if (SECRETS.has(variable)) {
      expect((thrown as ConfigError).message).not.toContain(shownValue(variable));
    } else {
      expect((thrown as ConfigError).message).toContain(shownValue(variable));
    }
  });

  it.each(THROUGH_SERVE)('%s with a bad value stops serve with exit code 2', (variable) => {
    const result = outcomes.get(variable)!;
    expect(result.code, result.stderr + result.stdout).toBe(2);
    expect(result.stderr).toMatch(new RegExp(`^slipway: configuration: ${variable}: `));
    expect(result.stderr).toContain(shownValue(variable));
    expect(result.stdout).not.toContain('API listening');
  });

  it.each(['/proc/self/nope', '/sys/nope'])('a data directory under %s is rejected', (dir) => {
    // mkdir under /proc can loop forever, so the check must come before it.
    expect(() => prepareDirectories(loadConfig({ SLIPWAY_DATA_DIR: dir }))).toThrow(
      `SLIPWAY_DATA_DIR: "${dir}" is under /${dir.split('/')[1]}, a kernel file system`,
    );
  });

  it('a path below a file names the cause', () => {
    expect(() =>
      prepareDirectories(loadConfig({ SLIPWAY_DATA_DIR: badValue('SLIPWAY_DATA_DIR') })),
    ).toThrow('a part of the path is a file, not a directory');
  });

  it('new directories are readable only by their owner', () => {
    const root = path.join(dataDir, 'private');
    prepareDirectories(loadConfig({ SLIPWAY_DATA_DIR: root }));
    for (const folder of [root, path.join(root, 'state'), path.join(root, 'backups')]) {
      expect(fs.statSync(folder).mode & 0o777).toBe(0o700);
    }
  });

  it('loadConfig accepts an empty environment with the documented defaults', () => {
    const config = loadConfig({}, '/srv/slipway');
    expect(config.api.host).toBe('127.0.0.1');
    expect(config.api.port).toBe(5000);
    expect(config.dbPath).toBe('/srv/slipway/data/state/orchestration.db');
    expect(config.intervals.healthCheckSeconds).toBe(300);
    expect(config.intervals.orchestrationSeconds).toBe(900);
    expect(config.intervals.cleanupSeconds).toBe(1800);
    expect(config.worker.apiUrl).toBe('http://127.0.0.1:5000');
  });

  it('short tokens name where to get one', () => {
    const messageFor = (variable: string) => {
      try {
        loadConfig({ [variable]: 'tiny' });
      } catch (error) {
        return (error as ConfigError).message;
      }
      return 'no error';
    };
    expect(messageFor('SLIPWAY_TOKEN')).toContain('create one with: slipway token create');
    expect(messageFor('SLIPWAY_ADMIN_TOKEN')).toContain('generate one with: openssl rand');
    expect(messageFor('SLIPWAY_AGENT_TOKEN')).toContain('generate one with: openssl rand');
  });

  it('ORCHESTRATION_DB_PATH naming a folder is rejected', () => {
    const folder = makeTempDir('slipway-db-folder-');
    for (const value of [`${folder}/state/`, folder]) {
      let thrown: unknown;
      try {
        loadConfig({ ORCHESTRATION_DB_PATH: value });
      } catch (error) {
        thrown = error;
      }
      expect(thrown, value).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).variable).toBe('ORCHESTRATION_DB_PATH');
      expect((thrown as ConfigError).message).toContain('not a folder');
    }
    expect(loadConfig({ ORCHESTRATION_DB_PATH: `${folder}/state/db.sqlite` }).dbPath).toBe(
      path.join(folder, 'state', 'db.sqlite'),
    );
  });

  it.each([
    ['999.1.1.1', 'four numbers from 0 to 255'],
    ['1.2.3', 'four numbers from 0 to 255'],
    ['host.123', 'four numbers from 0 to 255'],
    ['0x7f000001', 'four numbers from 0 to 255'],
    ['under_score.test', 'IPv6 address or a DNS host name'],
    ['fe80::1%eth0', 'set SLIPWAY_API_URL'],
  ])('API_HOST %s is rejected by its own name', (host, rule) => {
    let thrown: unknown;
    try {
      loadConfig({ API_HOST: host, API_PORT: '5306' });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).variable).toBe('API_HOST');
    expect((thrown as ConfigError).message).toContain(`"${host}"`);
    expect((thrown as ConfigError).message).toContain(rule);
  });

  it.each([
    '255.255.255.255',
    '0.0.0.0',
    '::',
    'fe80::1',
    'localhost',
    'ci-1.example.test',
    'a.b1',
  ])('API_HOST %s is accepted', (host) => {
    expect(loadConfig({ API_HOST: host }).api.host).toBe(host);
  });

  it('API_HOST with a zone ID is accepted beside SLIPWAY_API_URL', () => {
    const config = loadConfig({
      API_HOST: 'fe80::1%eth0',
      SLIPWAY_API_URL: 'http://10.0.0.5:5000',
    });
    expect(config.api.host).toBe('fe80::1%eth0');
  });

  it.each(['api', 'init-db', 'token list'])(
    'slipway %s names an invalid API_HOST',
    async (command) => {
      const result = await runCli(command.split(' '), {
        SLIPWAY_DATA_DIR: path.join(dataDir, 'ok'),
        API_HOST: '999.1.1.1',
        API_PORT: '5306',
      });
      expect(result.code, result.stderr + result.stdout).toBe(2);
      expect(result.stderr).toMatch(/^slipway: configuration: API_HOST: /);
      expect(result.stderr).toContain('"999.1.1.1"');
      expect(result.stderr).not.toContain('SLIPWAY_API_URL');
    },
  );

  it('API_TRUST_PROXY accepts addresses, ranges and names', () => {
    const config = loadConfig({
      API_TRUST_PROXY: ' 127.0.0.1, 10.0.0.0/8 ,fd00::/8,::1,loopback',
    });
    expect(config.api.trustProxy).toEqual([
      '127.0.0.1',
      '10.0.0.0/8',
      'fd00::/8',
      '::1',
      'loopback',
    ]);
    expect(loadConfig({ API_TRUST_PROXY: '::ffff:10.0.0.0/104' }).api.trustProxy).toEqual([
      '::ffff:10.0.0.0/104',
    ]);
    // The widest private ranges, and an IPv6 range just short of the IPv4-mapped addresses.
    for (const range of ['fc00::/7', '::/96', '172.16.0.0/12']) {
      expect(loadConfig({ API_TRUST_PROXY: range }).api.trustProxy, range).toEqual([range]);
    }
    expect(loadConfig({}).api.trustProxy).toEqual([]);
  });

  it('API_TRUST_PROXY rejects invalid entries', () => {
    const cases: Array<[string, RegExp]> = [
      ['10.0.0.0/33', /"10\.0\.0\.0\/33" has an invalid prefix length; use 0 to 32/],
      ['::/129', /use 0 to 128/],
      ['10.0.0.0/8/1', /is not an IP address or a CIDR range/],
      ['10.0.0.0/x', /invalid prefix length/],
      ['0.0.0.0/0', /"0\.0\.0\.0\/0" is wider than \/8, which no proxy network is/],
      // Two halves trust every address together.
      ['0.0.0.0/1,128.0.0.0/1', /"0\.0\.0\.0\/1" is wider than \/8/],
      ['10.0.0.0/7', /is wider than \/8/],
      ['::/0', /"::\/0" is wider than \/7/],
      // Fastify's proxy-addr matches IPv4 clients against an IPv4-mapped range.
      ['::ffff:0:0/96', /"::ffff:0:0\/96" contains more than a \/8 of IPv4-mapped addresses/],
      ['::FFFF:198.51.100.1/96', /IPv4-mapped addresses/],
      ['0:0:0:0:0:ffff:0:0/96', /IPv4-mapped addresses/],
      ['::/80', /IPv4-mapped addresses/],
      ['::ffff:10.0.0.0/103', /IPv4-mapped addresses/],
      ['127.0.0.1,,10.0.0.1', /contains an empty entry/],
      ['true', /"true" is not an IP address/],
    ];
    for (const [value, message] of cases) {
      expect(() => loadConfig({ API_TRUST_PROXY: value }), value).toThrow(ConfigError);
      expect(() => loadConfig({ API_TRUST_PROXY: value }), value).toThrow(message);
    }
  });

  it('out-of-range numbers are quoted as given', () => {
    expect(() => loadConfig({ API_TIMEOUT: '100000000000000000000000' })).toThrow(
      'API_TIMEOUT: must be between 1 and 3600, got 100000000000000000000000',
    );
  });

  it('public and GitHub URLs reject credentials', () => {
    for (const name of ['SLIPWAY_PUBLIC_URL', 'GITHUB_API_URL']) {
      const load = () => loadConfig({ [name]: 'https://ci:s3cret-pw@ci.example.test' });
      expect(load, name).toThrow(`${name}: must not contain a user name or password`);
      expect(load, name).not.toThrow('s3cret-pw');
    }
    // A worker may reach the API through a proxy that requires a password.
    const config = loadConfig({ SLIPWAY_API_URL: 'http://ci:s3cret-pw@127.0.0.1:5000' });
    expect(config.worker.apiUrl).toBe('http://ci:s3cret-pw@127.0.0.1:5000');
  });

  it('base URLs reject a query or fragment', () => {
    for (const name of ['SLIPWAY_PUBLIC_URL', 'GITHUB_API_URL', 'SLIPWAY_API_URL']) {
      for (const value of ['https://ci.example.test/?team=a', 'https://ci.example.test/#jobs']) {
        const load = () => loadConfig({ [name]: value });
        expect(load, `${name}=${value}`).toThrow(ConfigError);
        expect(load, `${name}=${value}`).toThrow(`${name}: must not contain a query or fragment`);
      }
    }
    const config = loadConfig({ SLIPWAY_PUBLIC_URL: 'https://ci.example.test/slipway/' });
    expect(config.api.publicUrl).toBe('https://ci.example.test/slipway');
  });

  it('GITHUB_WEBHOOK_SECRET needs 16 characters', () => {
    expect(() => loadConfig({ GITHUB_WEBHOOK_SECRET: 'x' })).toThrow(
      /GITHUB_WEBHOOK_SECRET: must be at least 16 characters, got 1; generate one with/,
    );
    const config = loadConfig({ GITHUB_WEBHOOK_SECRET: '0123456789abcdef' });
    expect(config.github.webhookSecret).toBe('0123456789abcdef');
  });

  it('LOG_LEVEL error lists every accepted value', () => {
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow(
      'LOG_LEVEL: must be one of trace, debug, info, warn (or warning), error, ' +
        'fatal (or critical), silent, got "loud"',
    );
  });

  it('an IPv6 API_HOST gives workers a bracketed URL', () => {
    expect(loadConfig({ API_HOST: '::1', API_PORT: '8080' }).worker.apiUrl).toBe(
      'http://[::1]:8080',
    );
  });

  it('a file that is not a database stops serve', async () => {
    const notDatabase = path.join(dataDir, 'not-a-database.db');
    fs.writeFileSync(notDatabase, 'x'.repeat(4096));
    const result = await runCli(['serve'], {
      SLIPWAY_DATA_DIR: path.join(dataDir, 'ok'),
      ORCHESTRATION_DB_PATH: notDatabase,
      API_PORT: '0',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`ORCHESTRATION_DB_PATH: cannot open "${notDatabase}"`);
    expect(result.stderr).toContain('as a SQLite database (file is not a database)');
    expect(fs.readFileSync(notDatabase, 'utf8')).toBe('x'.repeat(4096));
  });
});

describe('pipeline file errors at start', { timeout: 120_000 }, () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-pipeline-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const serveWith = (pipelineText: string | undefined) => {
    const file = path.join(dataDir, `pipelines-${Math.random().toString(16).slice(2)}.yml`);
    if (pipelineText !== undefined) fs.writeFileSync(file, pipelineText);
    return {
      file,
      result: runCli(['serve'], {
        SLIPWAY_DATA_DIR: path.join(dataDir, 'data'),
        SLIPWAY_PIPELINES: file,
        API_PORT: '0',
      }),
    };
  };

  it('names file, line and field of a bad value', async () => {
    const { file, result } = serveWith(
      [
        'pipelines:',
        '  ci:',
        '    image: python:3.12-slim',
        '    steps:',
        '      - run: pytest -q',
        '    timeout: soon',
        '',
      ].join('\n'),
    );
    const { code, stderr } = await result;
    expect(code).toBe(2);
    expect(stderr).toContain(`${file}:6: pipelines.ci.timeout: `);
  });

  it('names the line of an unknown dependency', async () => {
    const { file, result } = serveWith(
      [
        'pipelines:',
        '  ci:',
        '    steps:',
        '      - run: make test',
        '  deploy:',
        '    needs: [ci, integration]',
        '    steps:',
        '      - run: make deploy',
        '',
      ].join('\n'),
    );
    const { code, stderr } = await result;
    expect(code).toBe(2);
    expect(stderr).toContain(`${file}:6: pipelines.deploy.needs.1: unknown job type "integration"`);
  });

  it('names the line of broken YAML', async () => {
    const { file, result } = serveWith('pipelines:\n  ci:\n    steps: [\n');
    const { code, stderr } = await result;
    expect(code).toBe(2);
    expect(stderr).toMatch(new RegExp(`${file.replace(/[.]/g, '\\.')}:\\d+: \\(yaml\\): `));
  });

  it('names SLIPWAY_PIPELINES when the file is missing', async () => {
    const { file, result } = serveWith(undefined);
    const { code, stderr } = await result;
    expect(code).toBe(2);
    expect(stderr).toContain(`${file}: (file): cannot be read (ENOENT)`);
    expect(stderr).toContain('SLIPWAY_PIPELINES');
  });
});
