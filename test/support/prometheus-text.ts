// A strict parser of the Prometheus text exposition format 0.0.4, for tests of GET /metrics.
// No parser on npm is kept up (parse-prometheus-text-format has had no release in years and open
// correctness issues), so this one follows the format's grammar and rules itself and throws on
// anything a Prometheus server would refuse or misread:
//   # HELP <name> <docstring>      (escapes \\ and \n; at most one per family)
//   # TYPE <name> <type>           (counter, gauge, histogram, summary, untyped; before its samples)
//   <name>[{<label>="<value>",…}] <value> [<timestamp>]
// Names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (never __-prefixed),
// label values escape \\, \" and \n; a value is a float, NaN, +Inf or -Inf (as Go reads them).
// The samples of a family are contiguous, no series appears twice, counters are never negative,
// and a histogram's buckets are cumulative, end in le="+Inf" and agree with its _count.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** the sample's own name (for a histogram: <family>_bucket, _sum or _count) */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help?: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const FLOAT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const SUFFIXES: Record<MetricType, string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

class FormatError extends Error {
  constructor(line: number, text: string, why: string) {
    super(`line ${line}: ${why}: ${JSON.stringify(text.slice(0, 200))}`);
  }
}

/** A value as Go's strconv.ParseFloat reads it (Prometheus does): NaN and Inf in any case (prom-client writes "Nan"). */
function parseValue(text: string): number | undefined {
  if (/^nan$/i.test(text)) return NaN;
  const infinite = /^([+-]?)inf(?:inity)?$/i.exec(text);
  if (infinite) return infinite[1] === '-' ? -Infinity : Infinity;
  return FLOAT.test(text) ? Number(text) : undefined;
}

/** The labels between { and }, and where the closing brace is; undefined when malformed. */
function parseLabels(text: string, open: number): { labels: Record<string, string>; end: number } | undefined {
  const labels: Record<string, string> = {};
  let at = open + 1;
  for (;;) {
    if (text[at] === '}') return { labels, end: at };
    const equals = text.indexOf('=', at);
    if (equals < 0) return undefined;
    const name = text.slice(at, equals);
    if (!LABEL_NAME.test(name) || name.startsWith('__') || Object.hasOwn(labels, name)) return undefined;
    if (text[equals + 1] !== '"') return undefined;
    let value = '';
    let i = equals + 2;
    for (; i < text.length && text[i] !== '"'; i++) {
      if (text[i] !== '\\') {
        value += text[i];
        continue;
      }
      const escaped = text[++i];
      if (escaped === '\\') value += '\\';
      else if (escaped === '"') value += '"';
      else if (escaped === 'n') value += '\n';
      else return undefined;
    }
    if (i >= text.length) return undefined;
    labels[name] = value;
    at = i + 1;
    if (text[at] === ',') at++;
    else if (text[at] !== '}') return undefined;
  }
}

const seriesKey = (name: string, labels: Record<string, string>): string =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((key) => `${key}=${JSON.stringify(labels[key])}`)
    .join(',')}}`;

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const helped = new Set<string>();
  const typed = new Set<string>();
  const finished = new Set<string>();
  let current: Family | undefined;

  /** The family a sample name belongs to, among those declared (else an untyped family of its own). */
  const familyOf = (name: string): Family => {
    for (const family of [current, ...families.values()]) {
      if (family && SUFFIXES[family.type].some((suffix) => family.name + suffix === name)) return family;
    }
    const family: Family = { name, type: 'untyped', samples: [] };
    families.set(name, family);
    return family;
  };

  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, index) => {
    const number = index + 1;
    const fail = (why: string): never => {
      throw new FormatError(number, line, why);
    };
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!match) return; // an ordinary comment
      const [, keyword, name = '', rest = ''] = match;
      if (!METRIC_NAME.test(name)) fail('bad metric name');
      if (keyword === 'HELP') {
        if (helped.has(name)) fail('a second HELP for the family');
        if (/\\(?![\\n])/.test(rest)) fail('bad escape in HELP');
        helped.add(name);
        const family = families.get(name);
        const help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
        if (family) family.help = help;
        else families.set(name, { name, type: 'untyped', help, samples: [] });
        return;
      }
      if (!TYPES.has(rest as MetricType)) fail('unknown TYPE');
      const family = families.get(name);
      if (typed.has(name) || (family && family.samples.length > 0)) fail('TYPE after samples or twice');
      typed.add(name);
      const declared: Family = { name, type: rest as MetricType, samples: [], ...(family?.help !== undefined ? { help: family.help } : {}) };
      families.set(name, declared);
      if (current && current.name !== name) finished.add(current.name);
      current = declared;
      return;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) fail('no sample name');
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) fail('bad metric name');
    let labels: Record<string, string> = {};
    let rest = line.slice(nameEnd);
    if (rest.startsWith('{')) {
      const parsed = parseLabels(line, nameEnd);
      if (!parsed) return fail('malformed labels');
      labels = parsed.labels;
      rest = line.slice(parsed.end + 1);
    }
    const fields = rest.split(' ');
    if (fields[0] !== '' || fields.length < 2 || fields.length > 3) fail('expected " <value> [<timestamp>]"');
    const value = parseValue(fields[1] ?? '');
    if (value === undefined) fail('bad value');
    if (fields.length === 3 && !/^-?\d+$/.test(fields[2] ?? '')) fail('bad timestamp');
    const family = familyOf(name);
    if (finished.has(family.name)) fail(`samples of ${family.name} are not contiguous`);
    if (current && current.name !== family.name) finished.add(current.name);
    current = family;
    const key = seriesKey(name, labels);
    if (seen.has(key)) fail('a series appears twice');
    seen.add(key);
    if (family.type === 'counter' && !((value as number) >= 0)) fail('a counter is negative or NaN');
    if (family.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) fail('a bucket without le');
    family.samples.push({ name, labels, value: value as number });
  });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

function checkHistogram(family: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; count?: number; sum?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = seriesKey('', rest);
    const group = groups.get(key) ?? { buckets: [] };
    groups.set(key, group);
    if (sample.name.endsWith('_bucket')) group.buckets.push([parseValue(le ?? '') ?? NaN, sample.value]);
    else if (sample.name.endsWith('_count')) group.count = sample.value;
    else group.sum = sample.value;
  }
  for (const [key, group] of groups) {
    const where = `${family.name}${key}`;
    if (group.count === undefined || group.sum === undefined) throw new Error(`${where}: histogram without _count or _sum`);
    const last = group.buckets[group.buckets.length - 1];
    if (!last || last[0] !== Infinity) throw new Error(`${where}: histogram without an le="+Inf" bucket last`);
    if (last[1] !== group.count) throw new Error(`${where}: the +Inf bucket (${last[1]}) is not _count (${group.count})`);
    group.buckets.forEach(([bound, count], i) => {
      const previous = group.buckets[i - 1];
      if (Number.isNaN(bound)) throw new Error(`${where}: an le that is not a number`);
      if (previous && (bound <= previous[0] || count < previous[1])) throw new Error(`${where}: buckets not increasing and cumulative`);
    });
  }
}

/** The value of one series (0 when it does not exist yet: a counter not yet incremented). */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name === name && seriesKey('', sample.labels) === seriesKey('', labels)) return sample.value;
    }
  }
  return 0;
}

/** Every sample of every family. */
export function allSamples(families: Map<string, Family>): Sample[] {
  return [...families.values()].flatMap((family) => family.samples);
}
