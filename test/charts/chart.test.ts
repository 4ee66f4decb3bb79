// The Helm chart charts/portcullis, checked without a helm binary: its values against its
// values.schema.json (draft-07, as helm checks them), the configuration its ConfigMap renders
// (by default and with ci/production-values.yaml) through the server's own loadConfig with the
// environment its pods get, and its templates for references to values that do not exist,
// unbalanced blocks, and the settings that keep the pods safe.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import AjvModule from 'ajv';
import { stringify as toYaml } from 'yaml';
import { SERVER_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { envName, loadConfig, type Config } from '../../src/config/config.js';
import {
  CONFIG_ADDITIONS,
  REPO,
  chartText,
  chartYaml,
  defaultValues,
  helper,
  helperConstant,
  mergeValues,
  renderConfig,
  secretVariables,
  secretVariablesSet,
  setCalls,
  templates,
  valueAt,
  valuesReferences,
  type Tree,
} from './chart-files.js';

const Ajv = AjvModule.default;
const RELEASE = { name: 'portcullis', namespace: 'default' };

interface SchemaNode {
  properties?: Record<string, SchemaNode>;
  allOf?: SchemaNode[];
}

const serverSchema = JSON.parse(readFileSync(`${REPO}schemas/config.schema.json`, 'utf8')) as SchemaNode & Tree;
const valuesSchema = JSON.parse(chartText('values.schema.json')) as SchemaNode & Tree;
// Helm applies no defaults; envSeparator is the server schema's own keyword.
const validateValues = new Ajv({ allErrors: true, allowUnionTypes: true, keywords: ['envSeparator'] }).compile(valuesSchema);

function schemaProblems(values: Tree): string[] {
  if (validateValues(values)) return [];
  return (validateValues.errors ?? []).map((error) => `${error.instancePath || '/'} ${error.message ?? ''} ${JSON.stringify(error.params)}`);
}

function leafVariables(node: SchemaNode, path: string[] = []): string[] {
  if (node.properties) return Object.entries(node.properties).flatMap(([key, child]) => leafVariables(child, [...path, key]));
  return [envName(path)];
}
const KNOWN_VARIABLES = new Set([...leafVariables(serverSchema), 'PORTCULLIS_CONFIG']);

/** Stand-ins for the Secrets' contents, each one the server accepts for its setting. */
const SECRET_CONTENT: Record<string, string> = {
  PORTCULLIS_METADATA_POSTGRES_URL: 'postgres://portcullis:from-the-secret@db.example.org:5432/portcullis',
  PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID: 'AKIAFROMTHESECRET',
  PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY: 'secret-access-key-from-the-secret',
  PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: 'bind-password-from-the-secret',
  PORTCULLIS_ADMIN_PASSWORD: 'admin-password-from-the-secret',
};

const productionValues = (): Tree => mergeValues(defaultValues(), chartYaml('ci/production-values.yaml'));

describe('the Helm chart charts/portcullis', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-chart-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Loads the configuration as a pod of the chart would with these values: the file and its environment. */
  async function loadAsThePodWould(values: Tree, name: string): Promise<Config> {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, toYaml(renderConfig(values, RELEASE)));
    const env: NodeJS.ProcessEnv = { PORTCULLIS_CONFIG: file };
    for (const variable of secretVariablesSet(values)) {
      const content = SECRET_CONTENT[variable];
      assert.ok(content, `the test has no stand-in content for ${variable}: add one to SECRET_CONTENT`);
      env[variable] = content;
    }
    return loadConfig({ env });
  }

  describe('Chart.yaml', () => {
    it('is a v2 chart whose appVersion is the version of Portcullis in package.json', () => {
      const chart = chartYaml('Chart.yaml');
      const pkg = JSON.parse(readFileSync(`${REPO}package.json`, 'utf8')) as { version: string };
      assert.equal(chart.apiVersion, 'v2');
      assert.equal(chart.name, 'portcullis');
      assert.equal(chart.type, 'application');
      assert.match(String(chart.version), /^\d+\.\d+\.\d+/);
      assert.equal(chart.appVersion, pkg.version);
    });
  });

  describe('values.schema.json', () => {
    it('is draft-07 and checks `config` with the server schema itself (run test/charts/sync-config-schema.mjs after changing it)', () => {
      assert.equal(valuesSchema.$schema, 'http://json-schema.org/draft-07/schema#');
      const { $schema: _schema, $id: _id, ...embedded } = serverSchema;
      assert.deepEqual(valuesSchema.properties?.config?.allOf?.[0], embedded);
    });

    it('accepts the default values', () => {
      assert.deepEqual(schemaProblems(defaultValues()), []);
    });

    it('accepts ci/production-values.yaml over the defaults', () => {
      assert.deepEqual(schemaProblems(productionValues()), []);
    });

    it('names every top-level value that values.yaml has, and values.yaml has every one it names', () => {
      const inSchema = Object.keys(valuesSchema.properties ?? {}).filter((key) => key !== 'global');
      assert.deepEqual(Object.keys(defaultValues()).sort(), inSchema.sort());
    });

    const refused: [string, Tree, RegExp][] = [
      ['a replica count in words', { replicaCount: 'two' }, /^\/replicaCount /],
      ['an unknown top-level key', { replicas: 2 }, /additionalProperty":"replicas"/],
      ['a misspelled server setting', { config: { storag: { driver: 's3' } } }, /additionalProperty":"storag"/],
      ['a value the server refuses', { config: { storage: { driver: 'ftp' } } }, /^\/config\/storage\/driver /],
      ['a relative dataDir (the volume is mounted there)', { config: { dataDir: 'data' } }, /^\/config\/dataDir /],
      ['the admin password in the ConfigMap', { config: { adminPassword: 'twelve or more characters' } }, /^\/config\/adminPassword /],
      ['the S3 secret key in the ConfigMap', { config: { storage: { s3: { secretAccessKey: 'x' } } } }, /^\/config\/storage\/s3\/secretAccessKey /],
      ['a database password in the ConfigMap', { config: { metadata: { postgres: { url: 'postgres://u:pw@db/registry' } } } }, /^\/config\/metadata\/postgres\/url /],
      ['a Secret reference without a key', { secrets: { databaseUrl: { name: 'db', key: null } } }, /^\/secrets\/databaseUrl /],
      ['an unknown pull policy', { image: { pullPolicy: 'Sometimes' } }, /^\/image\/pullPolicy /],
      ['a port past 65535', { service: { port: 70000 } }, /^\/service\/port /],
      ['an externalURL with a path', { externalURL: 'https://example.org/registry' }, /^\/externalURL /],
      ['a disruption budget in words', { podDisruptionBudget: { minAvailable: 'half' } }, /^\/podDisruptionBudget\/minAvailable /],
      ['a metrics listener without a port', { config: { metrics: { listen: 'everywhere' } } }, /^\/config\/metrics\/listen /],
      ['a negative shutdown drain', { config: { shutdown: { drainSeconds: -1 } } }, /^\/config\/shutdown\/drainSeconds /],
    ];
    for (const [what, override, problem] of refused) {
      it(`refuses ${what}`, () => {
        const problems = schemaProblems(mergeValues(defaultValues(), override));
        assert.ok(
          problems.some((line) => problem.test(line)),
          `expected a problem matching ${problem}, got:\n${problems.join('\n')}`,
        );
      });
    }
  });

  describe('the configuration the ConfigMap renders', () => {
    it('repeats, in this test, every addition the portcullis.config helper makes to `config`', () => {
      assert.deepEqual(setCalls('portcullis.config'), CONFIG_ADDITIONS);
      assert.match(helper('portcullis.config'), /toYaml \$config/);
      assert.match(chartText('templates/configmap.yaml'), /portcullis\.yaml: \|\n\s+\{\{- include "portcullis\.config" \. \| nindent 4 \}\}/);
      assert.match(helper('portcullis.env'), /- name: PORTCULLIS_CONFIG\n\s+value: \{\{ printf "%s\/portcullis\.yaml" \(include "portcullis\.configDir" \.\) \| quote \}\}/);
    });

    it('by default: the embedded default on the data volume, accepted by loadConfig with the pod environment', async () => {
      const values = defaultValues();
      assert.deepEqual(secretVariablesSet(values), [], 'no Secret is referred to by default');
      const config = await loadAsThePodWould(values, 'default');
      assert.equal(config.listen, '0.0.0.0:5000');
      assert.equal(config.dataDir, '/var/lib/portcullis');
      assert.equal(config.metadata.driver, 'sqlite');
      assert.equal(config.storage.driver, 'filesystem');
      assert.equal(config.auth.token.realm, 'http://portcullis.default.svc:5000/auth/token');
      assert.equal(config.auth.token.keyFile, undefined, 'keys are generated under dataDir, on the volume');
      assert.deepEqual(config.tls, {});
    });

    it('with ci/production-values.yaml: PostgreSQL, S3, LDAP and the signing key, every secret from the environment', async () => {
      const values = productionValues();
      assert.deepEqual(secretVariablesSet(values).sort(), [...secretVariables().keys()].sort(), 'the example refers to every Secret');
      const config = await loadAsThePodWould(values, 'production');
      assert.equal(config.metadata.driver, 'postgres');
      assert.equal(config.metadata.postgres.url, SECRET_CONTENT.PORTCULLIS_METADATA_POSTGRES_URL);
      assert.equal(config.storage.driver, 's3');
      assert.equal(config.storage.s3.bucket, 'registry');
      assert.equal(config.storage.s3.accessKeyId, SECRET_CONTENT.PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID);
      assert.equal(config.storage.s3.secretAccessKey, SECRET_CONTENT.PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY);
      assert.equal(config.auth.ldap?.bindPassword, SECRET_CONTENT.PORTCULLIS_AUTH_LDAP_BIND_PASSWORD);
      assert.equal(config.adminPassword, SECRET_CONTENT.PORTCULLIS_ADMIN_PASSWORD);
      assert.equal(config.auth.token.keyFile, '/etc/portcullis/token-key/signing-key.pem');
      assert.equal(config.auth.token.realm, 'https://registry.example.org/auth/token');
      assert.deepEqual(config.http.trustProxy, ['10.0.0.0/8']);
    });

    it('with direct TLS: the certificate and key from the mounted Secret', async () => {
      const values = mergeValues(defaultValues(), { tls: { secretName: 'registry-tls' } });
      assert.deepEqual(schemaProblems(values), []);
      const config = await loadAsThePodWould(values, 'tls');
      assert.deepEqual(config.tls, { certificate: '/etc/portcullis/tls/tls.crt', key: '/etc/portcullis/tls/tls.key' });
      assert.equal(config.auth.token.realm, 'https://portcullis.default.svc:5000/auth/token');
    });

    it('gives the pods time to drain and finish their requests before Kubernetes kills them', async () => {
      for (const [name, values] of [
        ['default', defaultValues()],
        ['production', productionValues()],
      ] as const) {
        const config = await loadAsThePodWould(values, `shutdown-${name}`);
        assert.equal(config.shutdown.drainSeconds, 5, `${name}: a drain long enough for the endpoints to drop the pod`);
        const grace = Number(valueAt(values, ['terminationGracePeriodSeconds']));
        assert.ok(grace >= config.shutdown.drainSeconds + config.shutdown.timeoutSeconds, `${name}: terminationGracePeriodSeconds ${grace}`);
      }
      // The chart refuses a grace period shorter than the shutdown it must cover, with the server's defaults.
      const validate = helper('portcullis.validate');
      assert.match(validate, /\$drain := int \(dig "drainSeconds" 5 \$shutdown\)/);
      assert.match(validate, /\$timeout := int \(dig "timeoutSeconds" 60 \$shutdown\)/);
      assert.match(validate, /if lt \(int \.Values\.terminationGracePeriodSeconds\) \(add \$drain \$timeout\)/);
      const schema = serverSchema.properties as Record<string, { properties: Record<string, { default?: unknown }> }>;
      assert.equal(schema.shutdown?.properties.timeoutSeconds?.default, 60, 'the helper repeats the server default');
      assert.equal(valueAt(defaultValues(), ['lifecycle', 'preStop']), undefined, 'the server drains itself: no preStop sleep');
    });

    it('exposes and scrapes the port of config.metrics.listen when set, and refuses scraping metrics that are off', async () => {
      const values = mergeValues(defaultValues(), { config: { metrics: { listen: '0.0.0.0:9090' } }, metrics: { scrapeAnnotations: true } });
      assert.deepEqual(schemaProblems(values), []);
      const config = await loadAsThePodWould(values, 'metrics-listen');
      assert.equal(config.metrics.listen, '0.0.0.0:9090');
      assert.match(helper('portcullis.metricsPort'), /dig "metrics" "listen" "" \.Values\.config/);
      assert.match(helper('portcullis.metricsPort'), /regexFind "\[0-9\]\+\$"/);
      const deployment = chartText('templates/deployment.yaml');
      assert.match(deployment, /\{\{- with include "portcullis\.metricsPort" \. \}\}\n\s+- name: metrics\n\s+containerPort: \{\{ \. \}\}/);
      assert.match(deployment, /\{\{- with include "portcullis\.metricsPort" \. \}\}\n(?:\s+#.*\n)?\s+prometheus\.io\/port: \{\{ \. \| quote \}\}\n\s+prometheus\.io\/path: \/metrics\n\s+prometheus\.io\/scheme: http\n/);
      assert.match(helper('portcullis.validate'), /if and \.Values\.metrics\.scrapeAnnotations \(not \(dig "metrics" "enabled" true \$config\)\)/);
    });

    it('mounts the signing key and the TLS Secret where the configuration says', () => {
      const deployment = chartText('templates/deployment.yaml');
      assert.equal(helperConstant('portcullis.tokenKeyDir'), '/etc/portcullis/token-key');
      assert.match(deployment, /- name: token-key\n\s+mountPath: \{\{ include "portcullis\.tokenKeyDir" \. \}\}/);
      assert.match(deployment, /- key: \{\{ \.Values\.secrets\.tokenSigningKey\.key \| quote \}\}\n\s+path: signing-key\.pem/);
      assert.match(deployment, /- name: tls\n\s+mountPath: \{\{ include "portcullis\.tlsDir" \. \}\}/);
      assert.match(deployment, /- name: data\n\s+mountPath: \{\{ \.Values\.config\.dataDir \}\}/);
    });
  });

  describe('the templates', () => {
    it('set only PORTCULLIS_* variables the server knows (it refuses any other)', () => {
      const named = new Set([...templates().values()].flatMap((text) => [...text.matchAll(/PORTCULLIS_[A-Z0-9_]+/g)].map(([name]) => name)));
      assert.ok(named.size > 1);
      assert.deepEqual([...named].filter((name) => !KNOWN_VARIABLES.has(name)), []);
      for (const variable of secretVariables().keys()) assert.ok(named.has(variable));
    });

    it('start the server with the Node.js flags it is meant to run with, whatever the entrypoint', () => {
      assert.match(helper('portcullis.env'), new RegExp(`- name: NODE_OPTIONS\\n\\s+value: "${SERVER_NODE_FLAGS.join(' ')}"`));
      assert.match(chartText('templates/deployment.yaml'), /include "portcullis\.env"/);
    });

    it('refer only to values that values.yaml has', () => {
      const values = defaultValues();
      const missing = valuesReferences()
        .filter(({ path }) => valueAt(values, path) === undefined)
        .map(({ file, path }) => `${file}: .Values.${path.join('.')}`);
      assert.deepEqual([...new Set(missing)], []);
      assert.ok(valuesReferences().length > 50, 'the scan finds the references');
    });

    it('close every if, range, with and define they open', () => {
      for (const [file, text] of templates()) {
        const code = text.replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, '');
        const open: string[] = [];
        for (const [, action] of code.matchAll(/\{\{-?\s*(if|range|with|define|block|end)\b/g)) {
          if (action === 'end') assert.ok(open.pop(), `${file}: an end without a block`);
          else open.push(action as string);
        }
        assert.deepEqual(open, [], `${file}: blocks left open`);
      }
    });

    it('give the server and the migration job no service links, and a locked-down container', () => {
      const values = defaultValues();
      for (const file of ['deployment.yaml', 'job-migrate.yaml']) {
        const text = chartText(`templates/${file}`);
        assert.match(text, /\n\s+enableServiceLinks: false\n/, `${file}: Kubernetes would add PORTCULLIS_PORT… for a Service named portcullis`);
        assert.match(text, /securityContext:\n\s+\{\{- toYaml \.Values\.podSecurityContext \| nindent 8 \}\}/, file);
        assert.match(text, /securityContext:\n\s+\{\{- toYaml \.Values\.securityContext \| nindent 12 \}\}/, file);
        assert.match(text, /- name: tmp\n\s+mountPath: \/tmp/, `${file}: /tmp is a volume`);
      }
      assert.deepEqual(valueAt(values, ['podSecurityContext', 'runAsNonRoot']), true);
      assert.ok(Number(valueAt(values, ['podSecurityContext', 'runAsUser'])) > 0);
      assert.deepEqual(valueAt(values, ['podSecurityContext', 'seccompProfile']), { type: 'RuntimeDefault' });
      assert.deepEqual(valueAt(values, ['securityContext', 'readOnlyRootFilesystem']), true);
      assert.deepEqual(valueAt(values, ['securityContext', 'allowPrivilegeEscalation']), false);
      assert.deepEqual(valueAt(values, ['securityContext', 'capabilities']), { drop: ['ALL'] });
    });

    it('probe /readyz for readiness and /healthz for liveness and startup, on the registry port', () => {
      const deployment = chartText('templates/deployment.yaml');
      assert.match(deployment, /readinessProbe:\n\s+\{\{- include "portcullis\.probe" \(dict "path" "\/readyz" "probe" \.Values\.readinessProbe/);
      assert.match(deployment, /livenessProbe:\n\s+\{\{- include "portcullis\.probe" \(dict "path" "\/healthz" "probe" \.Values\.livenessProbe/);
      assert.match(deployment, /startupProbe:\n\s+\{\{- include "portcullis\.probe" \(dict "path" "\/healthz" "probe" \.Values\.startupProbe/);
      assert.match(deployment, /- name: registry\n\s+containerPort: \{\{ include "portcullis\.port" \. \}\}/);
      assert.match(helper('portcullis.probe'), /port: registry/);
      assert.match(deployment, /args:\n\s+- serve\n/);
    });

    it('run `portcullis migrate` as a pre-install/pre-upgrade hook, after a hook ConfigMap of its own', () => {
      const documents = chartText('templates/job-migrate.yaml').split(/\n---\n/);
      assert.equal(documents.length, 2);
      const [configMap = '', job = ''] = documents;
      const annotation = (doc: string, name: string): string => doc.match(new RegExp(`${name}: (.+)`))?.[1] ?? '';
      assert.match(configMap, /kind: ConfigMap/);
      assert.match(job, /kind: Job/);
      for (const doc of documents) {
        assert.equal(annotation(doc, 'helm.sh/hook'), 'pre-install,pre-upgrade');
        assert.match(annotation(doc, 'helm.sh/hook-delete-policy'), /before-hook-creation/);
      }
      const weight = (doc: string) => Number(JSON.parse(annotation(doc, 'helm.sh/hook-weight')));
      assert.ok(weight(configMap) < weight(job), 'the ConfigMap exists before the job starts');
      assert.match(configMap, /name: \{\{ include "portcullis\.fullname" \. \}\}-migrate\n/);
      assert.match(job, /configMap:\n\s+name: \{\{ include "portcullis\.fullname" \. \}\}-migrate\n/);
      assert.match(configMap, /\{\{- include "portcullis\.config" \. \| nindent 4 \}\}/, 'the same configuration as the server');
      assert.match(job, /\{\{- include "portcullis\.env" \. \| nindent 12 \}\}/, 'the same environment as the server');
      assert.match(job, /args:\n\s+- migrate\n/);
      assert.match(job, /restartPolicy: Never/);
      assert.doesNotMatch(job, /app\.kubernetes\.io\/component: server/, 'the Service must not send requests to the job');
    });
  });

  describe('README.md of the chart', () => {
    it('describes every top-level value', () => {
      const readme = chartText('README.md');
      const undocumented = Object.keys(defaultValues()).filter((key) => !readme.includes(`\`${key}`));
      assert.deepEqual(undocumented, []);
      assert.match(readme, /ci\/production-values\.yaml/, 'the production example');
    });
  });
});
