// One repository's tags: digest, size, platforms, who set the tag and when, immutability, the
// signature status and the trust policy's verdict (GET /extensions/v2/<name>/tags).
import { useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { callJson, repositoryPath, scopes } from '../api.js';
import { formatSize, pageLink, shortDigest, Show, SignatureBadge, Time, useLoad, VerdictBadge, Pager } from '../components.js';

export interface TagDetail {
  repository: string;
  tag: string;
  digest: string;
  status: string;
  signer?: string;
  identity?: string;
  format?: string;
  verifiedAt?: string;
  reason: string;
  signatures: number;
  artifact: boolean;
  policy?: string;
  mode?: string;
  verdict: string;
  mediaType: string;
  totalSize?: number;
  platforms?: string[];
  taggedAt: string;
  taggedBy?: string;
  immutable: boolean;
}

function SignatureCell({ tag }: { tag: TagDetail }) {
  return (
    <>
      <SignatureBadge status={tag.status} />
      <div class="small">
        {tag.status === 'valid' ? `by ${tag.signer ?? tag.identity ?? '?'} (${tag.format ?? '?'})` : tag.reason}
      </div>
    </>
  );
}

export function Repository() {
  const { query } = useLocation();
  const name = query.name ?? '';
  const [pages, setPages] = useState<(string | undefined)[]>([undefined]);
  const last = pages[pages.length - 1];
  const [loaded] = useLoad(() => {
    const params = new URLSearchParams({ n: '50', ...(last ? { last } : {}) });
    return callJson<{ tags: TagDetail[]; next?: string }>(`/extensions/v2/${repositoryPath(name)}/tags?${params.toString()}`, [scopes.pull(name)]);
  }, [name, last]);
  const host = window.location.host;
  return (
    <main>
      <nav class="crumbs" aria-label="Breadcrumb">
        <a href="/ui/">Repositories</a> / <span>{name}</span>
      </nav>
      <h1>{name}</h1>
      <Show loaded={loaded}>
        {({ tags, next }) => (
          <>
            {tags.length === 0 ? (
              <p class="muted">No tags.</p>
            ) : (
              <table class="tags">
                <caption>Tags, with each image's signature status and the trust policy's verdict</caption>
                <thead>
                  <tr>
                    <th scope="col">Tag</th>
                    <th scope="col">Digest</th>
                    <th scope="col">Size</th>
                    <th scope="col">Platforms</th>
                    <th scope="col">Pushed</th>
                    <th scope="col">Immutable</th>
                    <th scope="col">Signature</th>
                    <th scope="col">Policy</th>
                  </tr>
                </thead>
                <tbody>
                  {tags.map((tag) => (
                    <tr key={tag.tag} data-tag={tag.tag}>
                      <th scope="row">
                        <a href={pageLink('/ui/image', { name, reference: tag.tag })}>{tag.tag}</a>
                        {tag.artifact && <span class="badge">signature/attestation</span>}
                      </th>
                      <td>
                        <code title={tag.digest}>{shortDigest(tag.digest)}</code>
                      </td>
                      <td>{formatSize(tag.totalSize)}</td>
                      <td>{tag.platforms && tag.platforms.length > 0 ? tag.platforms.join(', ') : '—'}</td>
                      <td>
                        <Time at={tag.taggedAt} />
                        <div class="small">{tag.taggedBy ? `by ${tag.taggedBy}` : ''}</div>
                      </td>
                      <td>{tag.immutable ? 'yes' : 'no'}</td>
                      <td>
                        <SignatureCell tag={tag} />
                      </td>
                      <td>
                        <VerdictBadge verdict={tag.verdict} />
                        <div class="small">{tag.policy ? `${tag.policy} (${tag.mode ?? ''})` : 'no policy'}</div>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            <Pager cursors={pages} next={next} onChange={setPages} />
            <p class="small">
              Pull with <code>docker pull {host}/{name}:TAG</code>
            </p>
          </>
        )}
      </Show>
    </main>
  );
}
