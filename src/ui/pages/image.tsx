// One image: its references to copy, the trust verdict with every signature's verification
// outcome and reason, then the manifest (or index and its platforms), config, layers and
// referrers, read through the registry API with a pull token.
import { useLocation } from 'preact-iso';
import { call, callJson, repositoryPath, scopes } from '../api.js';
import { Copyable, Failure, formatSize, pageLink, shortDigest, Show, Time, useLoad, VerdictBadge } from '../components.js';

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const CONFIG_READ_LIMIT = 256 * 1024;

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  artifactType?: string;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

interface Manifest {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

interface ImageConfig {
  os?: string;
  architecture?: string;
  variant?: string;
  created?: string;
  config?: { Entrypoint?: string[] | null; Cmd?: string[] | null; User?: string; WorkingDir?: string; Labels?: Record<string, string> | null };
}

interface Explanation {
  digest: string;
  policy: { repositories: string; mode: string; immutableTags: string[]; signers: string[]; tagImmutable?: boolean } | null;
  artifact: boolean;
  signatures: { format: string; signature: string; outcome: string; signer?: string; identity?: string; reason: string; verifiedAt: string; current: boolean }[];
  verdict: string;
  reason: string;
}

interface Loaded {
  digest: string;
  manifest: Manifest;
  config?: ImageConfig | undefined;
}

async function loadManifest(name: string, reference: string): Promise<Loaded> {
  const response = await call(`/v2/${repositoryPath(name)}/manifests/${encodeURIComponent(reference)}`, [scopes.pull(name)], { accept: MANIFEST_TYPES });
  const manifest = (await response.json()) as Manifest;
  const digest = response.headers.get('Docker-Content-Digest') ?? '';
  if (!DIGEST.test(digest)) throw new Error('the registry did not say which digest it served');
  let config: ImageConfig | undefined;
  if (manifest.config && manifest.config.size <= CONFIG_READ_LIMIT && /json/.test(manifest.config.mediaType ?? '')) {
    config = await callJson<ImageConfig>(`/v2/${repositoryPath(name)}/blobs/${encodeURIComponent(manifest.config.digest)}`, [scopes.pull(name)]);
  }
  return { digest, manifest, config };
}

function platformOf(descriptor: Descriptor): string {
  const p = descriptor.platform;
  return p?.os && p.architecture ? [p.os, p.architecture, p.variant].filter(Boolean).join('/') : '—';
}

function TrustSection({ name, reference }: { name: string; reference: string }) {
  const [loaded] = useLoad(() => callJson<Explanation>(`/extensions/v2/${repositoryPath(name)}/trust/${encodeURIComponent(reference)}`, [scopes.pull(name)]), [name, reference]);
  return (
    <section aria-labelledby="trust-heading">
      <h2 id="trust-heading">Signatures and trust policy</h2>
      <Show loaded={loaded}>
        {(explanation) => (
          <>
            <p>
              <VerdictBadge verdict={explanation.verdict} /> {explanation.reason}
            </p>
            <p class="small">
              {explanation.policy
                ? `Policy ${explanation.policy.repositories}: signatures ${explanation.policy.mode}; signers ${explanation.policy.signers.join(', ') || 'none'}; immutable tags ${explanation.policy.immutableTags.join(', ') || 'none'}.`
                : 'No trust policy applies to this repository.'}
            </p>
            {explanation.signatures.length === 0 ? (
              <p data-testid="no-signatures">No signatures.</p>
            ) : (
              <table>
                <caption>Each signature and its verification</caption>
                <thead>
                  <tr>
                    <th scope="col">Outcome</th>
                    <th scope="col">Format</th>
                    <th scope="col">Signer</th>
                    <th scope="col">Reason</th>
                    <th scope="col">Verified</th>
                  </tr>
                </thead>
                <tbody>
                  {explanation.signatures.map((signature) => (
                    <tr key={signature.signature + signature.verifiedAt}>
                      <td>
                        <span class={`badge sig-${signature.outcome === 'valid' ? 'valid' : 'invalid'}`}>{signature.outcome}</span>
                        {!signature.current && <div class="small">being verified again</div>}
                      </td>
                      <td>{signature.format}</td>
                      <td>{signature.signer ?? signature.identity ?? '—'}</td>
                      <td>{signature.reason}</td>
                      <td>
                        <Time at={signature.verifiedAt} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </>
        )}
      </Show>
    </section>
  );
}

function Referrers({ name, digest }: { name: string; digest: string }) {
  const [loaded] = useLoad(() => callJson<{ manifests: Descriptor[] }>(`/v2/${repositoryPath(name)}/referrers/${encodeURIComponent(digest)}`, [scopes.pull(name)]), [name, digest]);
  return (
    <section aria-labelledby="referrers-heading">
      <h2 id="referrers-heading">Referrers</h2>
      <Show loaded={loaded}>
        {({ manifests }) =>
          manifests.length === 0 ? (
            <p class="muted">Nothing refers to this image.</p>
          ) : (
            <ul>
              {manifests.map((referrer) => (
                <li key={referrer.digest}>
                  <a href={pageLink('/ui/image', { name, reference: referrer.digest })}>{shortDigest(referrer.digest)}</a> {referrer.artifactType ?? referrer.mediaType ?? ''}
                </li>
              ))}
            </ul>
          )
        }
      </Show>
    </section>
  );
}

// The spec's grammar: what the page accepts from its URL before it names anything.
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function Image() {
  const { query } = useLocation();
  const name = query.name ?? '';
  const reference = query.reference ?? '';
  if (!NAME.test(name) || !(TAG.test(reference) || DIGEST.test(reference))) {
    return (
      <main>
        <p class="error" role="alert">
          This is not an image reference: a repository name and a tag or digest are needed.
        </p>
      </main>
    );
  }
  return <ImageOf name={name} reference={reference} />;
}

function ImageOf({ name, reference }: { name: string; reference: string }) {
  const tag = TAG.test(reference) ? reference : undefined;
  const [loaded] = useLoad(() => loadManifest(name, reference), [name, reference]);
  const host = window.location.host;
  // Once the manifest is read, everything below is about the digest the server answered with.
  const digest = loaded.state === 'ready' ? loaded.value.digest : undefined;
  return (
    <main>
      <nav class="crumbs" aria-label="Breadcrumb">
        <a href="/ui/">Repositories</a> / <a href={pageLink('/ui/repository', { name })}>{name}</a> / <span>{tag ?? shortDigest(reference)}</span>
      </nav>
      <h1>
        {name}
        {tag ? `:${tag}` : `@${shortDigest(reference)}`}
      </h1>
      {digest && (
        <dl class="references">
          {tag && (
            <>
              <dt>By tag</dt>
              <dd>
                <Copyable value={`docker pull ${host}/${name}:${tag}`} label="pull by tag" />
              </dd>
            </>
          )}
          <dt>By digest</dt>
          <dd>
            <Copyable value={`docker pull ${host}/${name}@${digest}`} label="pull by digest" />
          </dd>
        </dl>
      )}
      {loaded.state !== 'loading' && <TrustSection name={name} reference={digest ?? reference} />}
      {loaded.state === 'failed' ? (
        <section>
          <h2>Manifest</h2>
          <Failure error={loaded.error} />
        </section>
      ) : (
        <Show loaded={loaded}>
          {({ digest, manifest, config }) => (
            <>
              <section aria-labelledby="manifest-heading">
                <h2 id="manifest-heading">{manifest.manifests ? 'Index' : 'Manifest'}</h2>
                <p class="small">
                  {manifest.mediaType ?? 'no media type'} {manifest.artifactType ? `· artifact ${manifest.artifactType}` : ''}
                </p>
                {manifest.subject && (
                  <p>
                    Refers to <a href={pageLink('/ui/image', { name, reference: manifest.subject.digest })}>{shortDigest(manifest.subject.digest)}</a>
                  </p>
                )}
                {manifest.manifests && (
                  <table>
                    <caption>Platforms</caption>
                    <thead>
                      <tr>
                        <th scope="col">Platform</th>
                        <th scope="col">Digest</th>
                        <th scope="col">Size</th>
                      </tr>
                    </thead>
                    <tbody>
                      {manifest.manifests.map((child) => (
                        <tr key={child.digest}>
                          <td>{platformOf(child)}</td>
                          <td>
                            <a href={pageLink('/ui/image', { name, reference: child.digest })}>{shortDigest(child.digest)}</a>
                          </td>
                          <td>{formatSize(child.size)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
                {config && (
                  <dl class="config">
                    <dt>Platform</dt>
                    <dd>{[config.os, config.architecture, config.variant].filter(Boolean).join('/') || '—'}</dd>
                    <dt>Created</dt>
                    <dd>
                      <Time at={config.created} />
                    </dd>
                    <dt>Entrypoint / command</dt>
                    <dd>
                      <code>{[...(config.config?.Entrypoint ?? []), ...(config.config?.Cmd ?? [])].join(' ') || '—'}</code>
                    </dd>
                    <dt>User</dt>
                    <dd>{config.config?.User || 'root (not set)'}</dd>
                  </dl>
                )}
                {manifest.layers && (
                  <table>
                    <caption>Layers</caption>
                    <thead>
                      <tr>
                        <th scope="col">#</th>
                        <th scope="col">Digest</th>
                        <th scope="col">Type</th>
                        <th scope="col">Size</th>
                      </tr>
                    </thead>
                    <tbody>
                      {manifest.layers.map((layer, index) => (
                        <tr key={`${index}-${layer.digest}`}>
                          <td>{index + 1}</td>
                          <td>
                            <code title={layer.digest}>{shortDigest(layer.digest)}</code>
                          </td>
                          <td class="small">{layer.mediaType ?? ''}</td>
                          <td>{formatSize(layer.size)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
                {manifest.annotations && Object.keys(manifest.annotations).length > 0 && (
                  <table>
                    <caption>Annotations</caption>
                    <tbody>
                      {Object.entries(manifest.annotations).map(([key, value]) => (
                        <tr key={key}>
                          <th scope="row">{key}</th>
                          <td data-testid="annotation">{value}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
              </section>
              <Referrers name={name} digest={digest} />
            </>
          )}
        </Show>
      )}
    </main>
  );
}
