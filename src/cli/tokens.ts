/** `slipway token create|list|revoke`: API tokens, stored hashed; shown in clear only once. */
import fs from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { createLogger } from '../log.js';
import { openStore } from '../store/database.js';
import type { Kysely } from 'kysely';
import { TOKEN_ROLES, type Database, type TokenRole, type TokenRow } from '../store/schema.js';
import { createToken, findTokensByNameOrId, listTokens, revokeToken } from '../store/tokens.js';
import { appendAudit, RESERVED_ACTOR_NAMES } from '../store/audit.js';
import { cliAudit, CliError, loadCliConfig, runCommand } from './run.js';

const NAME_PATTERN = /^[\w.@-]{1,64}$/;

function parseRole(value: string): TokenRole {
  if (!(TOKEN_ROLES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`must be one of ${TOKEN_ROLES.join(', ')}`);
  }
  return value as TokenRole;
}

function parseName(value: string): string {
  if (!NAME_PATTERN.test(value)) {
    throw new InvalidArgumentError('must be 1 to 64 letters, digits, ".", "_", "@" or "-"');
  }
  // Token ids keep growing, so a name made only of digits is sooner or later another token's
  // id, and `slipway token revoke NAME` would then need --name.
  if (/^[0-9]+$/.test(value)) {
    throw new InvalidArgumentError(
      'must contain a character other than a digit, because `slipway token revoke` also takes ids',
    );
  }
  if (RESERVED_ACTOR_NAMES.has(value.toLowerCase())) {
    throw new InvalidArgumentError(
      `"${value}" is a name Slipway writes as the actor of its own audit rows; choose another name`,
    );
  }
  return value;
}

async function withStore<T>(
  body: (store: Awaited<ReturnType<typeof openStore>>) => Promise<T>,
): Promise<T> {
  const config = loadCliConfig();
  const existed = fs.existsSync(config.dbPath);
  const store = await openStore(config.dbPath, { logger: createLogger('warn') });
  if (!existed) {
    // Run from another folder or without the server's settings, the command would otherwise
    // print a token that the running server does not know.
    process.stderr.write(
      `slipway: no database was at ${config.dbPath}, so a new one was created there; a server ` +
        'with another SLIPWAY_DATA_DIR or ORCHESTRATION_DB_PATH does not see this change\n',
    );
  }
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

/** Rejects a name any token already has, revoked ones included, so audit rows name one token. */
async function rejectTakenName(db: Kysely<Database>, name: string): Promise<void> {
  const taken = await db
    .selectFrom('api_tokens')
    .select(['id', 'revoked_at'])
    .where('name', '=', name)
    .executeTakeFirst();
  if (taken === undefined) return;
  const state = taken.revoked_at === null ? 'active' : 'revoked';
  throw new CliError(
    `a token named "${name}" already exists (id ${taken.id}, ${state}). Choose another name.`,
  );
}

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('manage API tokens');

  token
    .command('create')
    .description('create a token and print it once')
    .requiredOption('--name <name>', 'who or what uses the token', parseName)
    .requiredOption('--role <role>', `one of ${TOKEN_ROLES.join(', ')}`, parseRole)
    .option('--json', 'print {"name", "role", "token"} as JSON')
    .action(async (options: { name: string; role: TokenRole; json?: boolean }) => {
      await runCommand(async () => {
        const created = await withStore((store) =>
          store.write(async (trx) => {
            await rejectTakenName(trx, options.name);
            const result = await createToken(trx, options.name, options.role);
            await appendAudit(trx, cliAudit(), {
              action: 'token_created',
              details: { name: options.name, role: options.role, prefix: result.row.prefix },
            });
            return result;
          }),
        );
        if (options.json === true) {
          process.stdout.write(
            `${JSON.stringify({ name: options.name, role: options.role, token: created.token })}\n`,
          );
        } else {
          process.stdout.write(`${created.token}\n`);
          process.stderr.write(
            `token "${options.name}" (role ${options.role}) created; it is shown only this once\n`,
          );
        }
      });
    });

  token
    .command('list')
    .description('list tokens (names, roles, prefixes; never the tokens)')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await runCommand(async () => {
        const rows = await withStore((store) => listTokens(store.db));
        const view = rows.map(
          ({ id, name, role, prefix, created_at, last_used_at, revoked_at }) => ({
            id,
            name,
            role,
            prefix,
            created_at,
            last_used_at,
            revoked_at,
          }),
        );
        if (options.json === true) {
          process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
          return;
        }
        process.stdout.write('ID\tNAME\tROLE\tPREFIX\tSTATE\n');
        for (const row of view) {
          const state = row.revoked_at === null ? 'active' : `revoked ${row.revoked_at}`;
          process.stdout.write(`${row.id}\t${row.name}\t${row.role}\t${row.prefix}…\t${state}\n`);
        }
      });
    });

  token
    .command('revoke')
    .description('revoke a token by name or id; it stops working within seconds')
    .argument('[name-or-id]', 'token name, or id as `slipway token list` shows it')
    .addOption(
      new Option('--id <id>', 'revoke the token with this id').argParser(parseId).conflicts('name'),
    )
    .option('--name <name>', 'revoke the token with this name, even one made only of digits')
    .action(async (nameOrId: string | undefined, options: RevokeOptions, command: Command) => {
      const targets = [nameOrId, options.id, options.name].filter((value) => value !== undefined);
      if (targets.length !== 1) {
        command.error('error: give exactly one of NAME-OR-ID, --id ID or --name NAME');
      }
      await runCommand(async () => {
        const revoked = await withStore((store) =>
          store.write(async (trx) => {
            const row = await pickToken(trx, nameOrId, options);
            if (row.revoked_at !== null) {
              throw new CliError(`token ${describeToken(row)} is already revoked`);
            }
            await revokeToken(trx, { id: row.id });
            await appendAudit(trx, cliAudit(), {
              action: 'token_revoked',
              details: { token: row.name, id: row.id, count: 1 },
            });
            return row;
          }),
        );
        // Each API process checks its cached tokens again after any commit, this one included.
        process.stdout.write(
          `revoked token ${describeToken(revoked)}; running API processes reject it from now on\n`,
        );
      });
    });
}

interface RevokeOptions {
  id?: number;
  name?: string;
}

function parseId(value: string): number {
  if (!/^[1-9][0-9]{0,14}$/.test(value)) {
    throw new InvalidArgumentError('must be a token id, a positive integer');
  }
  return Number(value);
}

function describeToken(row: Pick<TokenRow, 'id' | 'name'>): string {
  return `"${row.name}" (id ${row.id})`;
}

/**
 * Finds the token that `slipway token revoke` names, revoked or not. A bare argument made
 * only of digits can be one token's id and another token's name. Such an argument is rejected
 * with exit code 2, so the caller picks one token with --id or --name.
 */
async function pickToken(
  db: Kysely<Database>,
  nameOrId: string | undefined,
  options: RevokeOptions,
): Promise<TokenRow> {
  if (options.id !== undefined) {
    const row = await db
      .selectFrom('api_tokens')
      .selectAll()
      .where('id', '=', options.id)
      .executeTakeFirst();
    if (row === undefined) throw new CliError(`token id ${options.id} not found`);
    return row;
  }
  if (options.name !== undefined) {
    const row = await db
      .selectFrom('api_tokens')
      .selectAll()
      .where('name', '=', options.name)
      .executeTakeFirst();
    if (row === undefined) throw new CliError(`token named "${options.name}" not found`);
    return row;
  }
  const text = nameOrId ?? '';
  const rows = await findTokensByNameOrId(db, text);
  if (rows.length === 0) throw new CliError(`no token named or numbered ${text}`);
  if (rows.length > 1) {
    const matches = rows.map((row) => {
      const state = row.revoked_at === null ? 'active' : 'revoked';
      return `  id ${row.id}, named "${row.name}" (${state})`;
    });
    throw new CliError(
      `"${text}" is both a token id and another token's name, so nothing was revoked:\n` +
        `${matches.join('\n')}\n` +
        `Run \`slipway token revoke --id ${text}\` or \`slipway token revoke --name ${text}\`.`,
      2,
    );
  }
  return rows[0]!;
}
