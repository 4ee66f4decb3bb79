// Who is on the other end of a request. Behind reverse proxies, X-Forwarded-For is believed only
// as far as it was written by proxies we trust: the client is the rightmost entry that is not a
// trusted proxy, and a header from an untrusted peer is ignored altogether. Whatever is chosen must
// be an IP address before anything logs, throttles or stores it.
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';

export type ClientAddressOf = (request: IncomingMessage) => string;

export function clientAddressResolver(trustedProxies: readonly string[]): ClientAddressOf {
  const peer = (request: IncomingMessage): string => normalise(request.socket.remoteAddress ?? '');
  if (trustedProxies.length === 0) return peer;
  const trust = proxyaddr.compile([...trustedProxies]);
  return (request) => {
    // From the socket's peer leftwards through X-Forwarded-For, as long as each hop is trusted;
    // the last entry is the first untrusted one (or the leftmost, when all were trusted).
    const chain = proxyaddr.all(request, trust);
    for (let i = chain.length - 1; i >= 0; i--) {
      const candidate = (chain[i] ?? '').trim();
      if (isIP(candidate)) return normalise(candidate);
    }
    return peer(request);
  };
}

/** IPv4-mapped IPv6 (::ffff:192.0.2.1) written as the IPv4 address it is. */
function normalise(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? (mapped[1] as string) : address;
}

/** Whether the socket's peer is one of the trusted proxies (exempt from per-address limits). */
export function trustedPeer(trustedProxies: readonly string[]): (address: string) => boolean {
  if (trustedProxies.length === 0) return () => false;
  const trust = proxyaddr.compile([...trustedProxies]);
  return (address) => trust(address, 0);
}
