/**
 * Checks the aliases of a parsed pipeline file before it is converted to plain values. The
 * `yaml` package (2.9) reports an undefined anchor or a bad merge source only while it
 * converts, and its error carries no position, so these checks find the line themselves.
 */
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  visit,
  type Alias,
  type Document,
  type LineCounter,
  type Node,
} from 'yaml';

export interface AliasProblem {
  /** 1-based line of the alias or merge source, when the parser recorded its position. */
  line: number | undefined;
  message: string;
}

/** Lists each alias whose anchor is not defined before it, and each merge of a non-map. */
export function findAliasProblems(document: Document, lineCounter: LineCounter): AliasProblem[] {
  const problems: AliasProblem[] = [];
  const lineOf = (node: Node) => (node.range ? lineCounter.linePos(node.range[0]).line : undefined);

  visit(document, {
    Alias(_key, alias) {
      if (alias.resolve(document) !== undefined) return;
      problems.push({
        line: lineOf(alias),
        message:
          `anchor "${alias.source}" is not defined before its alias *${alias.source} ` +
          `(set &${alias.source} on a node above the alias)`,
      });
    },
    Pair(_key, pair) {
      if (!isMergeKey(pair.key) || !isNode(pair.value)) return;
      const sources = isSeq(pair.value) ? pair.value.items.filter(isNode) : [pair.value];
      for (const source of sources) {
        const message = describeMergeSource(source, document);
        if (message !== undefined) problems.push({ line: lineOf(source), message });
      }
    },
  });
  return problems;
}

function isNode(value: unknown): value is Node {
  return isAlias(value) || isScalar(value) || isMap(value) || isSeq(value);
}

/** Matches `<<`, which the parser turns into a symbol when merge keys are on. */
function isMergeKey(key: unknown): boolean {
  if (!isScalar(key)) return false;
  const value = key.value;
  return value === '<<' || (typeof value === 'symbol' && value.description === '<<');
}

/** Describes why a merge source is not a map, or returns undefined when it is one. */
function describeMergeSource(source: Node, document: Document): string | undefined {
  if (isMap(source)) return undefined;
  if (!isAlias(source)) return '`<<` merges a map or an alias of a map, not a plain value';
  // An undefined anchor is reported once, by the Alias visitor.
  const target = (source as Alias).resolve(document);
  if (target === undefined || isMap(target)) return undefined;
  return `\`<<\` merges a map, but anchor "${source.source}" is set on a ${
    isSeq(target) ? 'list' : 'plain value'
  }`;
}
