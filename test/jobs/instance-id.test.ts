/** The installation id that labels task containers, on real SQLite files. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { instanceId } from '../../src/jobs/labels.js';
import { openStore } from '../../src/store/database.js';
import { makeTempDir } from '../support/server.js';

async function idAt(file: string): Promise<string> {
  const store = await openStore(file);
  try {
    return instanceId(store);
  } finally {
    await store.close();
  }
}

describe('installation id', () => {
  it('stays the same across restarts', async () => {
    const file = path.join(makeTempDir(), 'state.db');
    const first = await idAt(file);
    expect(first).toMatch(/^[0-9a-f]{12}$/);
    expect(await idAt(file)).toBe(first);
  });

  it('differs for databases at the same path', async () => {
    // Compose installs all see their database at one path inside their containers.
    const dir = makeTempDir();
    const file = path.join(dir, 'state.db');
    const first = await idAt(file);
    for (const name of fs.readdirSync(dir)) fs.rmSync(path.join(dir, name));
    expect(await idAt(file)).not.toBe(first);
  });
});
