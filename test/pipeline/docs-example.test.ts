import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { TObject } from '@sinclair/typebox';
import { parsePipelineFile } from '../../src/pipeline/load.js';
import { PipelineFileSchema } from '../../src/pipeline/schema.js';
import { formatDuration } from '../../src/util/time.js';

const PIPELINES_MD = new URL('../../docs/pipelines.md', import.meta.url);

/** The first yaml block under `## Example` in docs/pipelines.md. */
function exampleFromDocs(): string {
  const text = fs.readFileSync(PIPELINES_MD, 'utf8');
  const section = text.split('\n## Example\n')[1] ?? '';
  const match = /```yaml\n([\s\S]*?)```/.exec(section);
  if (match === null) throw new Error('docs/pipelines.md has no yaml block under "## Example"');
  return match[1]!;
}

describe('docs/pipelines.md', () => {
  it('example loads', () => {
    const file = parsePipelineFile(exampleFromDocs(), 'docs/pipelines.md');
    const ci = file.pipelines.ci!;
    expect(ci.executor).toBe('docker');
    expect(ci.matrix.map((axis) => axis.name)).toEqual(['node', 'flavor']);
    expect(ci.secrets).toHaveLength(2);
    expect(ci.user).toBe('worker');
    expect(formatDuration(ci.timeoutMs)).toBe('20m');
    expect(file.pipelines.deploy!.needs).toEqual(['ci']);
    expect(Object.keys(file.recovery)).toEqual(['restart-web', 'rerun-failed', 'redeploy']);
    expect(file.healthChecks.map((check) => check.name)).toEqual(['web']);
  });

  it('documents every pipeline field', () => {
    const text = fs.readFileSync(PIPELINES_MD, 'utf8');
    const pipelineSchema = Object.values(
      PipelineFileSchema.properties.pipelines.patternProperties,
    )[0] as TObject;
    const resources = pipelineSchema.properties.resources as unknown as TObject;
    const fields = [
      ...Object.keys(pipelineSchema.properties).filter(
        (field) => !['resources', 'on_success'].includes(field),
      ),
      'steps[].name',
      'steps[].run',
      ...Object.keys(resources.properties).map((field) => `resources.${field}`),
      'on_success.state',
    ];
    expect(fields.length).toBeGreaterThan(15);
    for (const field of fields) expect(text, field).toContain(`| \`${field}\` |`);
    for (const variable of ['SLIPWAY_COMMIT', 'SLIPWAY_BRANCH', 'SLIPWAY_PARAM_<NAME>']) {
      expect(text, variable).toContain(`\`${variable}\``);
    }
  });

  it('is linked from the README', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    expect(readme).toContain('[docs/pipelines.md](docs/pipelines.md)');
  });
});
