// What a listing says of an image from its manifest alone: the bytes a pull fetches, and the
// platforms an index offers. Best effort: a manifest too large to have been read, or one that
// names neither, leaves the fields out (a single image's platform lives in its config blob).

export interface ImageSummary {
  /** manifest + config + layers, for an image (an index's images are each their own) */
  totalSize?: number | undefined;
  /** an index's platforms as os/architecture[/variant] */
  platforms?: string[] | undefined;
}

interface Descriptor {
  size?: unknown;
  platform?: { os?: unknown; architecture?: unknown; variant?: unknown };
}

const sizeOf = (descriptor: Descriptor | undefined): number => (typeof descriptor?.size === 'number' && Number.isSafeInteger(descriptor.size) && descriptor.size >= 0 ? descriptor.size : 0);

function platformOf(descriptor: Descriptor): string | undefined {
  const platform = descriptor.platform;
  if (typeof platform?.os !== 'string' || typeof platform.architecture !== 'string') return undefined;
  return [platform.os, platform.architecture, ...(typeof platform.variant === 'string' ? [platform.variant] : [])].join('/');
}

export function describeImage(payload: Buffer | undefined, manifestSize: number): ImageSummary {
  if (payload === undefined) return {};
  let document: { config?: Descriptor; layers?: unknown; manifests?: unknown };
  try {
    document = JSON.parse(payload.toString('utf8')) as typeof document;
  } catch {
    return {};
  }
  if (typeof document !== 'object' || document === null) return {};
  if (Array.isArray(document.manifests)) {
    const children = document.manifests.filter((entry): entry is Descriptor => typeof entry === 'object' && entry !== null);
    const platforms = children.map(platformOf).filter((platform): platform is string => platform !== undefined && platform !== 'unknown/unknown');
    return { platforms: [...new Set(platforms)] };
  }
  if (Array.isArray(document.layers)) {
    const layers = document.layers.filter((entry): entry is Descriptor => typeof entry === 'object' && entry !== null);
    return { totalSize: manifestSize + sizeOf(document.config) + layers.reduce((sum, layer) => sum + sizeOf(layer), 0) };
  }
  return {};
}
