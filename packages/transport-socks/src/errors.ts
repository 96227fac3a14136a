import { type ErrorRule, type FailurePhase, failure, type MailError, redact } from '@mailvia/core';

/**
 * The codes this package puts on its errors (`MailError.code`), one per way a SOCKS5 proxy can
 * fail. Connection errors to the proxy itself keep the system's code (`ECONNREFUSED`,
 * `ETIMEDOUT`…) and say in the message that it was the proxy.
 */
export const SOCKS_CODES = {
  /** The proxy refused the username or password (RFC 1929 status ≠ 0). */
  authFailed: 'SOCKS_AUTH_FAILED',
  /** The proxy accepts none of the offered methods: it wants a username and password, or other ones. */
  authRequired: 'SOCKS_AUTH_REQUIRED',
  /** Reply 0x02: the proxy's rules do not allow this client to reach this destination. */
  notAllowed: 'SOCKS_NOT_ALLOWED',
  /** Reply 0x01: general SOCKS server failure. */
  failure: 'SOCKS_FAILURE',
  /** Reply 0x03. */
  networkUnreachable: 'SOCKS_NETWORK_UNREACHABLE',
  /** Reply 0x04 (Dante also gives it when it cannot resolve the host name). */
  hostUnreachable: 'SOCKS_HOST_UNREACHABLE',
  /** Reply 0x05: the target refused the proxy's connection. */
  connectionRefused: 'SOCKS_CONNECTION_REFUSED',
  /** Reply 0x06: the proxy's connection to the target timed out. */
  ttlExpired: 'SOCKS_TTL_EXPIRED',
  /** Reply 0x07. */
  commandNotSupported: 'SOCKS_COMMAND_NOT_SUPPORTED',
  /** Reply 0x08: e.g. a host name given to a proxy that only takes addresses. */
  addressNotSupported: 'SOCKS_ADDRESS_NOT_SUPPORTED',
  /** The proxy did not finish the handshake and the target's connection in time. */
  timeout: 'SOCKS_TIMEOUT',
  /** The proxy closed the connection during the handshake (its client rules may refuse this host). */
  closed: 'SOCKS_CLOSED',
  /** The peer does not speak SOCKS5 (wrong port? an HTTP proxy?). */
  protocol: 'SOCKS_PROTOCOL',
} as const;

const C = SOCKS_CODES;
const code =
  (...codes: string[]) =>
  (f: { errorCode?: string | undefined }) =>
    f.errorCode !== undefined && codes.includes(f.errorCode);
const RFC1928 = 'RFC 1928 §6 (replies)';

/**
 * This package's rows of the classification table: what each SOCKS5 failure means for the
 * route. Pass them as `rules` to any route that turns errors of this package's agent or tunnel
 * into a {@link MailError} (the tunnel and the agent already raise classified MailErrors).
 */
export const socksErrorRules: readonly ErrorRule[] = [
  {
    source: 'socks5',
    id: 'proxy-auth-failed',
    kind: 'misconfigured',
    match: code(C.authFailed),
    meaning: 'The SOCKS proxy refused the username or password',
    reference: 'RFC 1929 §2',
  },
  {
    source: 'socks5',
    id: 'proxy-auth-required',
    kind: 'misconfigured',
    match: code(C.authRequired),
    meaning:
      'The SOCKS proxy accepts none of the offered authentication methods (does it need a username and password?)',
    reference: "RFC 1928 §3 (X'FF' NO ACCEPTABLE METHODS)",
  },
  {
    source: 'socks5',
    id: 'proxy-not-allowed',
    kind: 'misconfigured',
    match: code(C.notAllowed),
    meaning: "The SOCKS proxy's rules do not allow this destination: the route cannot work until they change",
    reference: RFC1928,
  },
  {
    source: 'socks5',
    id: 'proxy-unsupported',
    kind: 'misconfigured',
    match: code(C.commandNotSupported, C.addressNotSupported, C.protocol),
    meaning:
      'The proxy does not speak SOCKS5 as this route needs (wrong port, or socks5h to a proxy that takes only addresses)',
    reference: RFC1928,
  },
  {
    source: 'socks5',
    id: 'target-unreachable',
    kind: 'unavailable',
    match: code(C.hostUnreachable, C.networkUnreachable, C.connectionRefused, C.ttlExpired, C.failure),
    meaning: 'The proxy could not reach the target server: another route may',
    reference: RFC1928,
  },
  {
    source: 'socks5',
    id: 'proxy-timeout',
    kind: 'unavailable',
    match: code(C.timeout),
    meaning: 'The proxy did not set the connection up in time (before any message data): another route may serve',
  },
  {
    source: 'socks5',
    id: 'proxy-closed',
    kind: 'unavailable',
    match: code(C.closed),
    meaning:
      'The proxy closed the connection during the SOCKS handshake (overloaded, or its client rules refuse this host)',
  },
];

/** The reply names of the `socks` library (`Socks5Response`) and the code each one gets. */
const REPLY_CODES: Record<string, string> = {
  Failure: C.failure,
  NotAllowed: C.notAllowed,
  NetworkUnreachable: C.networkUnreachable,
  HostUnreachable: C.hostUnreachable,
  ConnectionRefused: C.connectionRefused,
  TTLExpired: C.ttlExpired,
  CommandNotSupported: C.commandNotSupported,
  AddressNotSupported: C.addressNotSupported,
};

const REPLY_WORDS: Record<string, string> = {
  [C.failure]: 'reported a general failure',
  [C.notAllowed]: 'does not allow a connection to',
  [C.networkUnreachable]: 'has no route to the network of',
  [C.hostUnreachable]: 'could not reach (or resolve)',
  [C.connectionRefused]: 'was refused a connection by',
  [C.ttlExpired]: 'timed out connecting to',
  [C.commandNotSupported]: 'does not support CONNECT to',
  [C.addressNotSupported]: 'does not support the address type of',
};

/** What went wrong, read from an error of the `socks` library (which only carries a message). */
export function socksErrorCode(message: string): string | undefined {
  const reply = /(?:rejected connection|Rejected)[^-]*- (\w+)/.exec(message)?.[1];
  if (reply) return REPLY_CODES[reply] ?? C.failure;
  if (/Authentication failed/i.test(message)) return C.authFailed;
  if (/no accepted authentication type|unknown auth type/i.test(message)) return C.authRequired;
  if (/timed out/i.test(message)) return C.timeout;
  if (/Socket closed/i.test(message)) return C.closed;
  if (/invalid (socks )?version|invalid .*handshake|Negotiation error/i.test(message)) return C.protocol;
  return /\b(E[A-Z]{3,})\b/.exec(message)?.[1];
}

/** Where a tunnel failed, for {@link tunnelFailure}. */
export interface TunnelFailureFacts {
  route: string;
  proxy: string;
  target: string;
  /** True when the TCP connection to the proxy itself failed. */
  toProxy: boolean;
  code: string | undefined;
  /** The library's or system's message; secrets are removed here. */
  detail: string;
  secrets: readonly (string | undefined)[];
  phase?: FailurePhase;
}

/** Builds the classified {@link MailError} for a tunnel that could not be opened. */
export function tunnelFailure(f: TunnelFailureFacts): MailError {
  const detail = redact(f.detail, f.secrets);
  let message: string;
  if (f.toProxy) message = `the SOCKS proxy ${f.proxy} could not be reached (${detail})`;
  else if (f.code === C.authFailed) message = `the SOCKS proxy ${f.proxy} refused the username or password`;
  else if (f.code === C.authRequired)
    message = `the SOCKS proxy ${f.proxy} accepts none of the offered authentication methods${f.proxy.includes('@') ? '' : ' (it may require a username and password)'}`;
  else if (f.code === C.timeout)
    message = `the SOCKS proxy ${f.proxy} did not connect to ${f.target} in time (${detail})`;
  else if (f.code === C.closed)
    message = `the SOCKS proxy ${f.proxy} closed the connection during the handshake before connecting to ${f.target}`;
  else if (f.code && REPLY_WORDS[f.code]) message = `the SOCKS proxy ${f.proxy} ${REPLY_WORDS[f.code]} ${f.target}`;
  else message = `the connection to ${f.target} through the SOCKS proxy ${f.proxy} failed (${detail})`;
  return failure({
    route: f.route,
    phase: f.phase ?? 'connect',
    message,
    text: detail,
    ...(f.code !== undefined ? { errorCode: f.code } : {}),
    rules: socksErrorRules,
  });
}
