// A hot query whose SQL is built once. knex's query builder costs several times what the lookup
// itself does (here: ~40 µs to build the manifest lookup, ~7 µs for SQLite to run it), so the
// queries on every request's path are written with the builder, compiled once, and then run as
// raw SQL with fresh bindings. On PostgreSQL the query is also a named statement: parsed and
// planned once per connection; on SQLite it runs on the direct path (sqlite-direct.ts).
import type { Knex } from 'knex';
import { type SqlValue, SqliteDirect } from './sqlite-direct.js';

/** Stands in for a parameter while the query is compiled; never a value a caller passes. */
const slot = (name: string): string => `\u0000portcullis-parameter:${name}`;

export class CompiledQuery<Params extends string, Row> {
  private readonly sql: string;
  /** For each binding of the compiled SQL: a parameter's name, or a constant the builder added (a limit). */
  private readonly bindings: ({ parameter: Params } | { constant: Knex.Value })[];
  private readonly direct: SqliteDirect | undefined;

  /**
   * `build` writes the query with `slot(name)` in place of each parameter's value; whatever else
   * it binds (a `.first()`'s limit) is kept as it is.
   */
  constructor(
    private readonly db: Knex,
    private readonly name: string,
    parameters: readonly Params[],
    build: (db: Knex, slot: (parameter: Params) => string) => Knex.QueryBuilder,
  ) {
    const compiled = build(db, slot).toSQL();
    const bySlot = new Map(parameters.map((parameter) => [slot(parameter), parameter]));
    this.sql = compiled.sql;
    this.bindings = compiled.bindings.map((value) => {
      const parameter = typeof value === 'string' ? bySlot.get(value) : undefined;
      return parameter === undefined ? { constant: value } : { parameter };
    });
    const missing = parameters.filter((parameter) => !this.bindings.some((binding) => 'parameter' in binding && binding.parameter === parameter));
    if (missing.length > 0) throw new Error(`${name}: parameters ${missing.join(', ')} are not bound by the query`);
    this.direct = SqliteDirect.of(db);
  }

  async rows(values: Record<Params, Knex.Value>): Promise<Row[]> {
    const bindings = this.bindings.map((binding) => ('parameter' in binding ? values[binding.parameter] : binding.constant));
    // The parameters of the queries compiled so far are names and digests: strings either driver binds.
    if (this.direct) return this.direct.run((sql) => sql.all<Row>(this.sql, ...(bindings as SqlValue[])));
    const result = (await this.db.raw(this.sql, bindings).options({ name: this.name })) as { rows: Row[] };
    return result.rows;
  }

  async first(values: Record<Params, Knex.Value>): Promise<Row | undefined> {
    return (await this.rows(values))[0];
  }
}
