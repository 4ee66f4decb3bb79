#!/usr/bin/env node
// Copies schemas/config.schema.json (the server's configuration schema) into the chart's
// values.schema.json as properties.config.allOf[0], so `helm install` checks `config` by the
// server's own rules. test/charts/chart.test.ts fails while the two differ.
// Usage: node test/charts/sync-config-schema.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const root = new URL('../../', import.meta.url);
const server = JSON.parse(readFileSync(new URL('schemas/config.schema.json', root), 'utf8'));
const valuesSchemaFile = new URL('charts/portcullis/values.schema.json', root);
const valuesSchema = JSON.parse(readFileSync(valuesSchemaFile, 'utf8'));

// A nested $schema or $id would start a new document (and base URI) inside the chart's schema.
const { $schema: _schema, $id: _id, ...embedded } = server;
valuesSchema.properties.config.allOf[0] = embedded;
writeFileSync(valuesSchemaFile, `${JSON.stringify(valuesSchema, null, 2)}\n`);
console.log('values.schema.json: properties.config.allOf[0] is schemas/config.schema.json');
