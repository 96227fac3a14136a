import type { ConnectionOptions } from 'node:tls';
import { type ErrorRule, RouteConfigError } from '@mailvia/core';
import type { EximCommandOptions } from './exim.js';

/** Options of {@link exim}. Timeouts are in milliseconds. */
export interface EximRouteOptions {
  /** The organisation's relay user and password: the relay checks both, and relays with that organisation's upstream account. */
  auth: { user: string; pass: string };
  /** The relay's address. @default '127.0.0.1' */
  host?: string;
  /** The relay's port. @default 587 */
  port?: number;
  /** A route name for logs and receipts. @default `exim://user@host:port` */
  name?: string;
  /** Keep connections to the relay open and reuse them. @default true */
  pool?: boolean;
  /** Connections per pool. @default 3 */
  maxConnections?: number;
  /**
   * Messages per pooled connection before it is replaced; below Exim's
   * `smtp_accept_max_per_connection` (1000), which would otherwise answer 421. @default 100
   */
  maxMessages?: number;
  /** Close a pooled connection idle for this long. @default 30_000 */
  idleTimeout?: number;
  /** TCP connect timeout: a relay that is down is found at once. @default 2000 */
  connectionTimeout?: number;
  /** Wait for the relay's greeting. @default 2000 */
  greetingTimeout?: number;
  /** Inactivity timeout once connected. @default 30_000 */
  socketTimeout?: number;
  /** The name to greet with in EHLO. @default the machine's host name */
  clientName?: string;
  /**
   * TLS options, for a relay that offers STARTTLS (the generated standalone relay does not; Debian's
   * and cPanel's Exim do). @default on loopback, the relay's certificate is not checked
   */
  tls?: ConnectionOptions;
  /** Refuse to go on without TLS. @default false on loopback, true elsewhere */
  requireTLS?: boolean;
  /** Extra classification rows, tried before this package's {@link EXIM_ERROR_RULES}. */
  rules?: readonly ErrorRule[];
  /** How {@link EximTransport.status} reaches the relay's Exim (binary, configuration, main log). */
  relay?: EximCommandOptions & { logFile?: string };
}

/** {@link EximRouteOptions} with defaults filled in. */
export interface ResolvedEximRouteOptions extends EximRouteOptions {
  host: string;
  port: number;
  name: string;
  pool: boolean;
  maxConnections: number;
  maxMessages: number;
  connectionTimeout: number;
  greetingTimeout: number;
  socketTimeout: number;
}

/** Checks the options and fills the defaults. Throws a RouteConfigError (never echoing the password). */
export function resolveEximOptions(options: EximRouteOptions): ResolvedEximRouteOptions {
  if (!options || typeof options !== 'object') throw new RouteConfigError('options', 'are required');
  const { auth } = options;
  if (!auth || typeof auth.user !== 'string' || auth.user === '') {
    throw new RouteConfigError('auth.user', 'is required: the relay relays only for an authenticated organisation');
  }
  if (typeof auth.pass !== 'string' || auth.pass === '') throw new RouteConfigError('auth.pass', 'is required');
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '') throw new RouteConfigError('host', 'must be a host name or address');
  const port = options.port ?? 587;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RouteConfigError('port', `${String(options.port)} is not a TCP port`);
  }
  const maxMessages = options.maxMessages ?? 100;
  if (!(maxMessages >= 1)) throw new RouteConfigError('maxMessages', 'must be at least 1');
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    ...options,
    host,
    port,
    name: options.name ?? `exim://${auth.user}@${shownHost}:${port}`,
    pool: options.pool ?? true,
    maxConnections: options.maxConnections ?? 3,
    maxMessages,
    connectionTimeout: options.connectionTimeout ?? 2000,
    greetingTimeout: options.greetingTimeout ?? 2000,
    socketTimeout: options.socketTimeout ?? 30_000,
  };
}
