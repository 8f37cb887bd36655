/**
 * Builds the API server that `slipway api` runs, on a throwaway data folder with fixed
 * settings, and returns its OpenAPI document or the Markdown reference rendered from it. The
 * fixed settings keep the output independent of the caller's environment. They include the
 * default pipeline file, whose job types get trigger paths in the document, even where the
 * current folder has a slipway.yml.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createContext } from '../app/context.js';
import { EXTRA_ROUTES } from '../app/roles.js';
import { loadConfig } from '../config/env.js';
import { DEFAULT_PIPELINES_PATH } from '../pipeline/load.js';
import { renderApiReference, type OpenApiDocument } from './openapi-markdown.js';
import { buildServer } from './server.js';

export async function buildOpenApiDocument(): Promise<OpenApiDocument> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-openapi-'));
  try {
    const config = loadConfig(
      { SLIPWAY_DATA_DIR: dataDir, SLIPWAY_PIPELINES: DEFAULT_PIPELINES_PATH, LOG_LEVEL: 'silent' },
      dataDir,
    );
    const context = await createContext(config, { syncDependencies: false });
    try {
      const app = await buildServer(context, { routes: EXTRA_ROUTES });
      await app.ready();
      const document = app.swagger() as OpenApiDocument;
      await app.close();
      return document;
    } finally {
      await context.store.close();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

export async function generateApiReference(): Promise<string> {
  return renderApiReference(await buildOpenApiDocument());
}
