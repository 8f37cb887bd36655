/**
 * Writes docs/api.md from the OpenAPI document of a freshly built API server (the same routes
 * that `slipway api` serves), using a throwaway data folder. Run it with `npm run docs:api`.
 * With --check it writes nothing and exits 1 when docs/api.md is out of date.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { generateApiReference } from '../src/api/openapi-document.js';

const target = fileURLToPath(new URL('../docs/api.md', import.meta.url));
const markdown = await generateApiReference();

if (process.argv.includes('--check')) {
  const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
  if (current !== markdown) {
    console.error('docs/api.md is out of date; regenerate it with: npm run docs:api');
    process.exit(1);
  }
  console.log('docs/api.md is up to date');
} else {
  fs.mkdirSync(fileURLToPath(new URL('../docs', import.meta.url)), { recursive: true });
  fs.writeFileSync(target, markdown);
  console.log(`wrote ${target}`);
}
