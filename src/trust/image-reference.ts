// Image references as signatures write them (`[host[:port]/]path[:tag][@digest]`), and whether
// one names a given repository of this registry. The host is ignored on purpose: a registry does
// not know every name clients reach it by (load balancers, mirrors, ports), while the repository
// path is exactly what a signature must not be replayed across.

const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

export interface ImageReference {
  host?: string;
  /** the repository path, without host, tag or digest */
  path: string;
  tag?: string;
  digest?: string;
}

/** Parses a reference; undefined when it is not one. */
export function parseImageReference(reference: string): ImageReference | undefined {
  const [nameAndTag, digest, ...extra] = reference.split('@');
  if (nameAndTag === undefined || extra.length > 0) return undefined;
  if (digest !== undefined && !DIGEST.test(digest)) return undefined;

  // A tag is a colon after the last slash; a colon before it belongs to a host's port.
  const lastSlash = nameAndTag.lastIndexOf('/');
  const tagColon = nameAndTag.indexOf(':', lastSlash + 1);
  const name = tagColon === -1 ? nameAndTag : nameAndTag.slice(0, tagColon);
  const tag = tagColon === -1 ? undefined : nameAndTag.slice(tagColon + 1);
  if (tag !== undefined && !TAG.test(tag)) return undefined;

  const components = name.split('/');
  // Docker's rule: the first component is a host when it could not be a repository component.
  const first = components[0] ?? '';
  const hasHost = components.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (hasHost && !HOST.test(first)) return undefined;
  const pathComponents = hasHost ? components.slice(1) : components;
  if (!pathComponents.every((component) => NAME_COMPONENT.test(component))) return undefined;

  return {
    ...(hasHost ? { host: first } : {}),
    path: pathComponents.join('/'),
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/**
 * Whether `reference` names `repository` on any host. A repository whose own first component
 * looks like a host (`example.com/app`) is also named by the reference written without a host.
 */
export function namesRepository(reference: ImageReference, repository: string): boolean {
  if (reference.path === repository) return true;
  return reference.host !== undefined && `${reference.host}/${reference.path}` === repository;
}
