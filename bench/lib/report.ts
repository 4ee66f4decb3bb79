// Plain-text tables.
import type { BenchResult, Metric } from './scenarios.js';

/** A fixed-width table; the first column is left-aligned, the others right-aligned. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[0] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  ');
  const rule = widths.map((width) => '-'.repeat(width)).join('  ');
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

export function formatNumber(value: number): string {
  // NaN: no figure (e.g. a ratio of two zero counts, a percentile of no requests).
  if (Number.isNaN(value)) return '-';
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '-∞';
  return value.toFixed(Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
}

/** The metric's value (counts whole), or "error" when its scenario failed. */
export const formatMetric = (metric: Metric | undefined): string =>
  metric?.value === undefined ? (metric?.error ? 'error' : '-') : metric.unit === 'count' ? String(metric.value) : formatNumber(metric.value);

/** The errors of a result, one line per failed scenario. */
export function errorLines(result: BenchResult, name: string): string[] {
  const errors = new Set(result.metrics.flatMap((metric) => (metric.error ? [metric.error] : [])));
  return [...errors].map((error) => `${name}: ${error}`);
}

export function resultTable(result: BenchResult): string {
  const rows = result.metrics.map((metric) => [metric.label, formatMetric(metric), metric.unit]);
  return [table(['metric', 'value', 'unit'], rows), ...errorLines(result, result.url)].join('\n');
}
