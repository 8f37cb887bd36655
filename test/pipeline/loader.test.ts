import { describe, expect, it } from 'vitest';
import {
  DEFAULT_PIPELINES_PATH,
  loadPipelineFile,
  parsePipelineFile,
  PipelineFileError,
} from '../../src/pipeline/load.js';
import { TASK_VARIABLES } from '../../src/dispatch/task-spec.js';
import { formatDuration, parseDuration } from '../../src/util/time.js';

/** Loads `text` and returns the lines of the PipelineFileError it throws. */
function problemsOf(text: string): string[] {
  try {
    parsePipelineFile(text, 'slipway.yml');
  } catch (error) {
    expect(error).toBeInstanceOf(PipelineFileError);
    return (error as PipelineFileError).problems.map(
      (problem) => `${problem.file}:${problem.line}: ${problem.field}: ${problem.message}`,
    );
  }
  throw new Error('the pipeline file loaded without problems');
}

describe('pipeline loader', () => {
  it('loads the shipped default file', () => {
    const file = loadPipelineFile(DEFAULT_PIPELINES_PATH);
    expect(Object.keys(file.pipelines)).toContain('ci');
  });

  it('merges shared settings from an x- field', () => {
    const file = parsePipelineFile(
      [
        'x-local: &local',
        '  executor: local',
        '  timeout: 5m',
        'pipelines:',
        '  lint:',
        '    <<: *local',
        '    steps: [{ run: make lint }]',
        '  unit:',
        '    <<: *local',
        '    timeout: 20m',
        '    steps: [{ run: make test }]',
      ].join('\n'),
      'slipway.yml',
    );
    expect(file.pipelines.lint).toMatchObject({ executor: 'local', timeoutMs: 300_000 });
    expect(file.pipelines.unit).toMatchObject({ executor: 'local', timeoutMs: 1_200_000 });
  });

  it('ends a YAML error at the position', () => {
    const problems = problemsOf('pipelines:\n  ci:\n    steps: [\n');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^slipway\.yml:\d+: \(yaml\): .*at line \d+, column \d+$/);
  });

  it('gives a file without health_checks the checks of Slipway itself', () => {
    const bare = 'pipelines:\n  deploy:\n    steps: [{ run: echo deploy }]\n';
    const defaults = parsePipelineFile(bare, 'slipway.yml').healthChecks;
    expect(defaults.map((check) => [check.name, check.type])).toEqual([
      ['database', 'database'],
      ['workers', 'workers'],
      ['queue', 'queue'],
    ]);
    // The shipped file lists the same checks.
    const shipped = loadPipelineFile(DEFAULT_PIPELINES_PATH).healthChecks;
    expect(shipped.map((check) => [check.name, check.type])).toEqual(
      defaults.map((check) => [check.name, check.type]),
    );
    const none = parsePipelineFile(`${bare}health_checks: []\n`, 'slipway.yml').healthChecks;
    expect(none).toEqual([]);
  });

  it('rejects a matrix template in run', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    matrix:',
        '      flavor: [alpine, debian]',
        '    steps:',
        '      - name: build',
        '        run: make FLAVOR=${{ matrix.flavor }}',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:7: pipelines.ci.steps.0.run: "${{ matrix.flavor }}" is not expanded in ' +
        'commands; use "$FLAVOR" (the matrix axis as an environment variable) instead',
    ]);
  });

  it('names the variable for each template', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    matrix:',
        '      node_version: { default: ["20"] }',
        '    secrets: [NPM_TOKEN]',
        '    steps:',
        '      - run: echo ${{ commit }} ${{branch}}',
        '      - run: echo ${{ params.deploy-env }} ${{ matrix.node_version }}',
        '      - run: echo ${{ secrets.NPM_TOKEN }} ${{ matrix.python }} ${{ job }}',
      ].join('\n'),
    );
    expect(problems).toHaveLength(7);
    expect(problems[0]).toContain('steps.0.run: "${{ commit }}"');
    expect(problems[0]).toContain('use "$SLIPWAY_COMMIT"');
    expect(problems[1]).toContain('use "$SLIPWAY_BRANCH"');
    expect(problems[2]).toContain('slipway.yml:8: pipelines.ci.steps.1.run');
    expect(problems[2]).toContain('use "$SLIPWAY_PARAM_DEPLOY_ENV"');
    expect(problems[3]).toContain('use "$NODE_VERSION" (the matrix axis');
    expect(problems[4]).toContain('use "$NPM_TOKEN" (the secret');
    expect(problems[5]).toContain('no matrix axis "python" (axes: node_version)');
    expect(problems[6]).toContain('SLIPWAY_COMMIT, SLIPWAY_BRANCH, one per matrix axis');
  });

  it('keeps templates in image', () => {
    const file = parsePipelineFile(
      [
        'pipelines:',
        '  ci:',
        '    executor: docker',
        '    image: node:${{ matrix.node }}',
        '    matrix: { node: ["20", "22"] }',
        '    steps: [{ run: node --version }]',
      ].join('\n'),
      'slipway.yml',
    );
    expect(file.pipelines.ci!.image).toBe('node:${{ matrix.node }}');
  });

  it('rejects an invalid image reference', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    executor: docker',
        '    image: Node:${{ matrix.node }}',
        '    matrix: { node: ["20", "22"] }',
        '    steps: [{ run: make }]',
        '  lint:',
        '    image: node:${{ matrix.node }}',
        '    matrix: { node: ["20", "../22"] }',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:4: pipelines.ci.image: gives "Node:20", which is not a valid Docker image reference',
      'slipway.yml:8: pipelines.lint.image: gives "node:../22", which is not a valid Docker image reference',
    ]);
  });

  it('rejects docker without an image', () => {
    const problems = problemsOf(
      ['pipelines:', '  ci:', '    executor: docker', '    steps:', '      - run: make'].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:3: pipelines.ci.executor: is docker but "image" is missing; ' +
        'name the image the steps run in',
    ]);
  });

  it('accepts local without an image', () => {
    const file = parsePipelineFile(
      ['pipelines:', '  ci:', '    executor: local', '    steps: [{ run: make }]'].join('\n'),
      'slipway.yml',
    );
    expect(file.pipelines.ci!.executor).toBe('local');
  });

  it('says a missing run is required', () => {
    const problems = problemsOf(
      ['pipelines:', '  ci:', '    steps:', '      - name: build'].join('\n'),
    );
    expect(problems).toEqual(['slipway.yml:4: pipelines.ci.steps.0.run: is required']);
  });

  it('rejects a memory limit below 6 MiB', () => {
    for (const memory of ['1k', '"0"', '5m', '0', '4194304']) {
      const problems = problemsOf(
        [
          'pipelines:',
          '  ci:',
          `    resources: { memory: ${memory} }`,
          '    steps: [{ run: make }]',
        ].join('\n'),
      );
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(
        /^slipway\.yml:3: pipelines\.ci\.resources\.memory: is \d+ bytes; the Docker engine needs at least 6m \(6291456 bytes\)$/,
      );
    }
    const text = [
      'pipelines:',
      '  ci:',
      '    resources: { memory: 6m }',
      '    steps: [{ run: make }]',
    ];
    expect(parsePipelineFile(text.join('\n'), 'slipway.yml').pipelines.ci!.resources.memory).toBe(
      6 * 1024 * 1024,
    );
  });

  it('lists the executors', () => {
    const problems = problemsOf(
      ['pipelines:', '  ci:', '    executor: podman', '    steps: [{ run: make }]'].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:3: pipelines.ci.executor: must be one of docker, local, got "podman"',
    ]);
  });

  it('shows the job type pattern', () => {
    const problems = problemsOf(
      ['pipelines:', '  Bad_Name:', '    steps: [{ run: make }]'].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:2: pipelines.Bad_Name: is not a valid name: names must match the pattern ' +
        '^[a-z][a-z0-9-]{0,62}$',
    ]);
  });

  it('lists allowed fields for unknown ones', () => {
    const problems = problemsOf(
      ['pipelines:', '  ci:', '    colour: red', '    steps: [{ run: make }]'].join('\n'),
    );
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^slipway\.yml:3: pipelines\.ci\.colour: is not a known field/);
    expect(problems[0]).toContain('allowed fields: executor, image, steps,');
  });

  it('says a zero timeout must be positive', () => {
    for (const value of ['0', '0s']) {
      const problems = problemsOf(
        ['pipelines:', '  ci:', `    timeout: ${value}`, '    steps: [{ run: make }]'].join('\n'),
      );
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/^slipway\.yml:3: pipelines\.ci\.timeout: must be positive/);
    }
  });
});

describe('pipeline loader with several problems', () => {
  it('reports schema and reference problems together', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    executor: docker',
        '    image: node:${{ matrix.x }}',
        '    concurrency: { group: branch, cancel_in_progress: maybe }',
        '    steps: [{ run: make }]',
        '  lint:',
        '    executor: docker',
        '    needs: [nope, test]',
        '    steps: [{ run: make }]',
        '  test:',
        '    needs: [lint]',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toContain(
      'slipway.yml:5: pipelines.ci.concurrency.cancel_in_progress: must be a boolean, got "maybe"',
    );
    expect(problems).toContain(
      'slipway.yml:4: pipelines.ci.image: unknown template value "matrix.x" ' +
        '(only matrix axes may be used here)',
    );
    expect(problems).toContain(
      'slipway.yml:8: pipelines.lint.executor: is docker but "image" is missing; ' +
        'name the image the steps run in',
    );
    expect(problems).toContain('slipway.yml:9: pipelines.lint.needs.0: unknown job type "nope"');
    expect(problems).toContain(
      'slipway.yml:9: pipelines.lint.needs: dependency cycle: lint -> test -> lint',
    );
    expect(problems).toHaveLength(5);
  });

  it('rejects unknown group and state templates', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    concurrency: { group: "${{ nope }}" }',
        '    on_success: { state: { GOOD: "${{ matrix.x }}", OK: "${{ commit }}" } }',
        '    steps: [{ run: make }]',
        '  lint:',
        '    concurrency: "lint-${{ branch }}-${{ params.env }}"',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    const groupValues = '(only ${{ type }}, ${{ branch }}, ${{ commit }} may be used here)';
    expect(problems).toEqual([
      `slipway.yml:3: pipelines.ci.concurrency.group: unknown template value "nope" ${groupValues}`,
      'slipway.yml:4: pipelines.ci.on_success.state.GOOD: unknown template value "matrix.x" ' +
        '(only ${{ commit }}, ${{ branch }}, ${{ job_id }}, ${{ type }} may be used here)',
      `slipway.yml:7: pipelines.lint.concurrency: unknown template value "params.env" ${groupValues}`,
    ]);
  });

  it('rejects malformed group and state templates', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    concurrency: "deploy-${{ branch-name }}"',
        '    on_success: { state: { A: "${{ commit", B: "${{ }}" } }',
        '    steps: [{ run: make }]',
        '  lint:',
        '    concurrency: "   "',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      expect.stringMatching(
        /^slipway\.yml:3: pipelines\.ci\.concurrency: unknown template value "branch-name"/,
      ),
      'slipway.yml:4: pipelines.ci.on_success.state.A: has "${{" without a closing "}}"; ' +
        'write a template as ${{ name }}',
      expect.stringMatching(
        /^slipway\.yml:4: pipelines\.ci\.on_success\.state\.B: unknown template value ""/,
      ),
      'slipway.yml:7: pipelines.lint.concurrency: is blank; name the group',
    ]);
  });

  it('merge of an undefined anchor names it', () => {
    expect(problemsOf('pipelines:\n  a:\n    <<: *nope\n    steps: [{run: x}]\n')).toEqual([
      'slipway.yml:3: (yaml): anchor "nope" is not defined before its alias *nope ' +
        '(set &nope on a node above the alias)',
    ]);
  });

  it('merge list reports each undefined anchor', () => {
    const text =
      'x-a: &a { executor: local }\n' +
      'pipelines:\n  a:\n    <<: [*a, *nope]\n    steps: [{run: x}]\n' +
      '  b:\n    <<: *later\n    steps: [{run: x}]\nx-later: &later { executor: local }\n';
    expect(problemsOf(text)).toEqual([
      'slipway.yml:4: (yaml): anchor "nope" is not defined before its alias *nope ' +
        '(set &nope on a node above the alias)',
      'slipway.yml:7: (yaml): anchor "later" is not defined before its alias *later ' +
        '(set &later on a node above the alias)',
    ]);
  });

  it('merge of a defined map anchor loads', () => {
    const file = parsePipelineFile(
      'x-base: &base { executor: local }\npipelines:\n  a:\n    <<: *base\n    steps: [{run: x}]\n',
      'slipway.yml',
    );
    expect(file.pipelines.a?.executor).toBe('local');
  });

  it('reports alias and document errors', () => {
    expect(
      problemsOf('x-s: &s hello\npipelines:\n  ci:\n    <<: *s\n    steps: [{ run: a }]\n'),
    ).toEqual(['slipway.yml:4: (yaml): `<<` merges a map, but anchor "s" is set on a plain value']);
    expect(problemsOf('pipelines:\n  ci:\n    executor: *nope\n    steps: [{ run: a }]\n')).toEqual(
      [
        'slipway.yml:3: (yaml): anchor "nope" is not defined before its alias *nope ' +
          '(set &nope on a node above the alias)',
      ],
    );
    expect(
      problemsOf('x-l: &l [1]\npipelines:\n  ci:\n    <<: [*l]\n    steps: [{ run: a }]\n'),
    ).toEqual(['slipway.yml:4: (yaml): `<<` merges a map, but anchor "l" is set on a list']);
    expect(problemsOf('pipelines:\n  ci:\n    <<: 5\n    steps: [{ run: a }]\n')).toEqual([
      'slipway.yml:3: (yaml): `<<` merges a map or an alias of a map, not a plain value',
    ]);
    expect(problemsOf('pipelines: {}\n---\npipelines: {}\n')[0]).toMatch(
      /\(yaml\): the file holds more than one YAML document \(a second ---\); keep one$/,
    );
  });

  it('rejects repeated, ambiguous and relative secrets', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    secrets:',
        '      - NPM_TOKEN',
        '      - { name: NPM_TOKEN, from_env: OTHER }',
        '      - { name: KEY, from_env: KEY, from_file: /etc/key }',
        '      - { name: CERT, from_file: certs/ci.pem }',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:5: pipelines.ci.secrets.1: lists secret NPM_TOKEN again (first at index 0); list it once',
      'slipway.yml:6: pipelines.ci.secrets.2: has both from_env and from_file; keep the one to read',
      'slipway.yml:7: pipelines.ci.secrets.3.from_file: must be an absolute path on the ' +
        'worker\'s host, got "certs/ci.pem"',
    ]);
  });

  it('rejects secrets named like Slipway variables', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    secrets:',
        '      - SLIPWAY_COMMIT',
        '      - { name: CI, from_env: CI_TOKEN }',
        '      - SLIPWAY_PARAM_TOKEN',
        '      - { name: SLIPWAY_PROCESS_MARK, from_file: /etc/slipway/mark }',
        '      - SLIPWAY_DEPLOY_KEY',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:4: pipelines.ci.secrets.0: secret SLIPWAY_COMMIT uses the reserved name ' +
        "SLIPWAY_COMMIT, which Slipway sets in every step's environment; a secret must not " +
        "share a name with Slipway's own variables, so rename it",
      'slipway.yml:5: pipelines.ci.secrets.1.name: secret CI uses the reserved name CI, which ' +
        "Slipway sets in every step's environment; a secret must not share a name with " +
        "Slipway's own variables, so rename it",
      'slipway.yml:6: pipelines.ci.secrets.2: secret SLIPWAY_PARAM_TOKEN uses the reserved ' +
        'prefix SLIPWAY_PARAM_, which Slipway gives each trigger parameter; a secret must not ' +
        "share a name with Slipway's own variables, so rename it",
      'slipway.yml:7: pipelines.ci.secrets.3.name: secret SLIPWAY_PROCESS_MARK uses the ' +
        "reserved name SLIPWAY_PROCESS_MARK, which the local executor sets in its steps' " +
        "environment; a secret must not share a name with Slipway's own variables, so rename it",
    ]);
  });

  it('rejects every variable of a task as a secret', () => {
    for (const name of TASK_VARIABLES) {
      const problems = problemsOf(
        `pipelines:\n  ci:\n    secrets: [${name}]\n    steps: [{ run: make }]\n`,
      );
      expect(problems, name).toHaveLength(1);
      expect(problems[0], name).toContain(`uses the reserved name ${name},`);
    }
  });

  it('names the field and rule inside a union', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    matrix:',
        '      flavor: maybe',
        '      node: [20, true]',
        '      python: { from: 3 }',
        '    concurrency: 5',
        '    resources: { memory: lots }',
        '    secrets: [{ name: TOKEN, colour: red }]',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:4: pipelines.ci.matrix.flavor: must be a list or a map with the fields ' +
        'from, default, got "maybe"',
      'slipway.yml:5: pipelines.ci.matrix.node.1: must be a string or a number, got true',
      'slipway.yml:6: pipelines.ci.matrix.python.from: must be a string, got 3',
      'slipway.yml:7: pipelines.ci.concurrency: must be a string or a map with the fields ' +
        'group, cancel_in_progress, got 5',
      'slipway.yml:8: pipelines.ci.resources.memory: must match the pattern ' +
        '^\\d+(\\.\\d+)?[kKmMgG]?[bB]?$, got "lots"',
      'slipway.yml:9: pipelines.ci.secrets.0.colour: is not a known field; allowed fields: ' +
        'name, from_env, from_file',
    ]);
  });

  it('checks the valid parts of secrets and resources', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    resources: { memory: 1m, pids: 0 }',
        '    secrets:',
        '      - { name: "bad-name" }',
        '      - { name: CERT, from_file: certs/ci.pem }',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:3: pipelines.ci.resources.pids: expected integer to be greater or equal to 1, got 0',
      'slipway.yml:3: pipelines.ci.resources.memory: is 1048576 bytes; the Docker engine needs ' +
        'at least 6m (6291456 bytes)',
      'slipway.yml:5: pipelines.ci.secrets.0.name: must match the pattern ^[A-Za-z_][A-Za-z0-9_]*$, ' +
        'got "bad-name"',
      'slipway.yml:6: pipelines.ci.secrets.1.from_file: must be an absolute path on the ' +
        'worker\'s host, got "certs/ci.pem"',
    ]);
  });

  it('skips checks that read a failed field', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    executor: docker',
        '    image: ""',
        '    matrix: [py]',
        '    steps:',
        '      - run: echo ${{ matrix.py }}',
        '  lint:',
        '    needs: [ci]',
        '    steps: [{ run: make }]',
        'recovery:',
        '  again: { action: reboot, pipeline: nope }',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:4: pipelines.ci.image: expected string length greater or equal to 1, got ""',
      'slipway.yml:5: pipelines.ci.matrix: must be a map',
      'slipway.yml:12: recovery.again.action: must be one of restart_container, rerun_failed, ' +
        'run_pipeline, got "reboot"',
    ]);
  });

  it('rejects a fixed matrix over the task limit', () => {
    const values = Array.from({ length: 17 }, (_, index) => index + 1).join(', ');
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    matrix:',
        `      a: [${values}]`,
        `      b: [${values}]`,
        '      c: { from: c_values, default: [1, 2] }',
        '    steps: [{ run: make }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:3: pipelines.ci.matrix: expands to 289 tasks (values per axis: a: 17, ' +
        'b: 17), more than the limit of 256 tasks per job; remove values or split the pipeline',
    ]);
  });

  it('accepts a fixed matrix at the task limit', () => {
    const values = Array.from({ length: 16 }, (_, index) => index + 1).join(', ');
    const file = parsePipelineFile(
      [
        'pipelines:',
        '  ci:',
        `    matrix: { a: [${values}], b: [${values}] }`,
        '    steps: [{ run: make }]',
      ].join('\n'),
      'slipway.yml',
    );
    expect(file.pipelines.ci!.matrix).toHaveLength(2);
  });
});

describe('formatDuration', () => {
  it('round-trips through parseDuration', () => {
    for (const [milliseconds, text] of [
      [5_000, '5s'],
      [300_000, '5m'],
      [5_400_000, '1h30m'],
      [1_500, '1s500ms'],
      [0, '0s'],
    ] as const) {
      expect(formatDuration(milliseconds)).toBe(text);
      expect(parseDuration(text)).toBe(milliseconds);
    }
  });
});

describe('pipeline user', () => {
  /** A docker job type whose `user` line is `line`, which is line 5 of the file. */
  const dockerUser = (line: string) =>
    [
      'pipelines:',
      '  ci:',
      '    executor: docker',
      '    image: busybox',
      `    user: ${line}`,
      '    steps: [{ run: id }]',
    ].join('\n');

  it.each([
    ['"1000"', '1000'],
    ['1000', '1000'],
    ['"012"', '012'],
    ['0', '0'],
    ['1000:1000', '1000:1000'],
    ['"0:0"', '0:0'],
    ['app', 'app'],
    ['app:staff', 'app:staff'],
    ['node:1000', 'node:1000'],
    ['www-data', 'www-data'],
    ['_apt', '_apt'],
    ['first.last', 'first.last'],
    ['2147483647:2147483647', '2147483647:2147483647'],
    ['worker', 'worker'],
  ])('accepts user %s', (line, expected) => {
    const file = parsePipelineFile(dockerUser(line), 'slipway.yml');
    expect(file.pipelines.ci!.user).toBe(expected);
  });

  it('leaves user unset by default', () => {
    const file = parsePipelineFile(
      ['pipelines:', '  ci:', '    image: busybox', '    steps: [{ run: id }]'].join('\n'),
      'slipway.yml',
    );
    expect(file.pipelines.ci!.user).toBeUndefined();
  });

  it.each([
    ['""', 'must not be empty; write a user such as 1000, 1000:1000, app or app:app, or worker'],
    ['"app user"', 'must not contain whitespace, got "app user"'],
    [
      '"${{ matrix.u }}"',
      'takes no template: the container user is the same for every task of the job type, ' +
        'got "${{ matrix.u }}"',
    ],
    ['" 1000"', 'must not contain whitespace, got " 1000"'],
    ['"1000\\t"', 'must not contain whitespace, got "1000\\t"'],
    ['"1:2:3"', 'must contain at most one ":" (user:group), got "1:2:3"'],
    ['":1000"', 'must name a user before ":", got ":1000"'],
    ['"1000:"', 'must name a group after ":", got "1000:"'],
    [
      '"app/x"',
      'must be a name or number made of letters, digits, ".", "_" and "-" that does not ' +
        'start with "." or "-", on each side of ":", got "app/x"',
    ],
    [
      '"-1"',
      'must be a name or number made of letters, digits, ".", "_" and "-" that does not ' +
        'start with "." or "-", on each side of ":", got "-1"',
    ],
    [
      '"app:.."',
      'must be a name or number made of letters, digits, ".", "_" and "-" that does not ' +
        'start with "." or "-", on each side of ":", got "app:.."',
    ],
    [
      '"2147483648"',
      'must use a uid and gid of at most 2147483647, the Docker engine\'s limit, got "2147483648"',
    ],
    [
      '"0:4294967295"',
      'must use a uid and gid of at most 2147483647, the Docker engine\'s limit, got "0:4294967295"',
    ],
    [
      '4294967295',
      'must use a uid and gid of at most 2147483647, the Docker engine\'s limit, got "4294967295"',
    ],
    [
      'worker:staff',
      '"worker" means the worker process\'s uid and gid and takes no group, ' +
        'got "worker:staff"; write worker alone, or the uid of an image user named worker',
    ],
    [
      'true',
      'must be a user name or uid, with an optional ":group" or ":gid", or worker, got true',
    ],
    ['-5', 'must be a user name or uid, with an optional ":group" or ":gid", or worker, got -5'],
    [
      '0x10',
      'must be a uid in plain decimal digits, got 0x10, which YAML reads as the number 16; ' +
        'write the uid in decimal, or quote the value',
    ],
    [
      '012',
      'must be a uid in plain decimal digits, got 012, which YAML reads as the number 12; ' +
        'write the uid in decimal, or quote the value',
    ],
    [
      '1e3',
      'must be a uid in plain decimal digits, got 1e3, which YAML reads as the number 1000; ' +
        'write the uid in decimal, or quote the value',
    ],
  ])('rejects user %s', (line, message) => {
    expect(problemsOf(dockerUser(line))).toEqual([`slipway.yml:5: pipelines.ci.user: ${message}`]);
  });

  it('rejects user with executor local', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  deploy:',
        '    executor: local',
        '    user: worker',
        '    steps: [{ run: id }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:4: pipelines.deploy.user: applies only to the docker executor, and this ' +
        'job type has executor: local, whose steps run as the worker\'s user; remove "user" ' +
        'or set executor: docker',
    ]);
  });

  it('rejects user without an executor', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    image: busybox',
        '    user: "1000"',
        '    steps: [{ run: id }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      "slipway.yml:4: pipelines.ci.user: applies only to the docker executor; set executor: docker, because the worker's default executor may be local, whose steps run as the worker's user",
    ]);
  });

  it('reports a bad user and a local executor together', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    executor: local',
        '    user: "a b"',
        '    steps: [{ run: id }]',
      ].join('\n'),
    );
    expect(problems).toHaveLength(2);
    expect(problems[0]).toBe(
      'slipway.yml:4: pipelines.ci.user: must not contain whitespace, got "a b"',
    );
    expect(problems[1]).toContain(
      'slipway.yml:4: pipelines.ci.user: applies only to the docker executor',
    );
  });

  it('skips the executor rule when executor is invalid', () => {
    const problems = problemsOf(
      [
        'pipelines:',
        '  ci:',
        '    executor: podman',
        '    user: "1000"',
        '    steps: [{ run: id }]',
      ].join('\n'),
    );
    expect(problems).toEqual([
      'slipway.yml:3: pipelines.ci.executor: must be one of docker, local, got "podman"',
    ]);
  });
});
