import {
  boolParam,
  intParam,
  isLoopbackHost,
  maskUrl,
  onlyParams,
  type PreparedMessage,
  type Receipt,
  RouteConfigError,
  type RouteFactory,
  type SendOptions,
  smtp,
  type Transport,
  urlCredentials,
} from '@mailvia/core';
import { type EximRouteOptions, type ResolvedEximRouteOptions, resolveEximOptions } from './config.js';
import { QUEUE_ID } from './logs.js';
import { EXIM_ERROR_RULES } from './rules.js';
import { type RelayStatus, relayStatus } from './status.js';

/** A route through the relay, which can also tell what the relay did with a message afterwards. */
export interface EximTransport extends Transport {
  /** Connects to the relay and authenticates as the organisation, without sending. */
  verify(options?: { signal?: AbortSignal }): Promise<void>;
  /** Closes the pooled connections to the relay (it reconnects lazily). */
  close(): Promise<void>;
  /**
   * What the relay did with a message it accepted (delivered upstream, deferred and why, failed):
   * reads the relay's log and queue on this machine. Pass the receipt, or a Message-ID.
   */
  status(ref: Receipt | string): Promise<RelayStatus>;
}

class EximRelayTransport implements EximTransport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  private readonly inner: Transport;

  constructor(private readonly options: ResolvedEximRouteOptions) {
    this.name = options.name;
    this.inner = smtp({
      host: options.host,
      port: options.port,
      auth: options.auth,
      name: options.name,
      pool: options.pool,
      maxConnections: options.maxConnections,
      maxMessages: options.maxMessages,
      connectionTimeout: options.connectionTimeout,
      greetingTimeout: options.greetingTimeout,
      socketTimeout: options.socketTimeout,
      ...(options.idleTimeout !== undefined ? { idleTimeout: options.idleTimeout } : {}),
      ...(options.clientName !== undefined ? { clientName: options.clientName } : {}),
      // A relay on loopback that offers STARTTLS (Debian's and cPanel's Exim do, with a self-signed
      // or host-name certificate) is used without checking its certificate: on loopback, TLS
      // protects nothing the machine itself does not. Pass `tls` to verify it anyway.
      ...(options.tls !== undefined
        ? { tls: options.tls }
        : isLoopbackHost(options.host)
          ? { tls: { rejectUnauthorized: false } }
          : {}),
      ...(options.requireTLS !== undefined ? { requireTLS: options.requireTLS } : {}),
      acceptedBy: 'relay',
      rules: [...(options.rules ?? []), ...EXIM_ERROR_RULES],
    });
  }

  async send(message: PreparedMessage, options?: SendOptions): Promise<Receipt> {
    const receipt = await this.inner.send(message, options);
    // Exim answers the final dot with "250 OK id=1rABCd-000123-AB": its queue id
    const queueId = receipt.providerMessageId ?? /\bid=(\S+)/.exec(receipt.response ?? '')?.[1];
    return {
      ...receipt,
      ...(queueId && QUEUE_ID.test(queueId) ? { providerMessageId: queueId } : {}),
      acceptedBy: 'relay',
    };
  }

  verify(options?: { signal?: AbortSignal }): Promise<void> {
    return this.inner.verify!(options);
  }

  close(): Promise<void> {
    return this.inner.close!();
  }

  status(ref: Receipt | string): Promise<RelayStatus> {
    const relay = this.options.relay ?? {};
    return relayStatus({
      ...relay,
      ...(typeof ref === 'string'
        ? { messageId: ref }
        : { messageId: ref.messageId, ...(ref.providerMessageId ? { queueId: ref.providerMessageId } : {}) }),
    });
  }
}

/**
 * A route through a local Exim relay (such as the one `mailvia-exim generate` writes): submits
 * over SMTP to the relay, authenticated as the organisation, and the relay hands the mail to that
 * organisation's own upstream account. A receipt means **accepted by the relay** (`acceptedBy:
 * 'relay'`, `providerMessageId` = Exim's queue id), not delivered: {@link EximTransport.status}
 * or {@link relayStatus} tell the final outcome.
 *
 * A relay that is down refuses the connection at once (`unavailable`), so a failover chain moves
 * on without waiting.
 *
 * @example
 * ```ts
 * const route = exim({ auth: { user: 'school-a', pass: process.env.RELAY_PASSWORD! } });
 * const chain = failover([route, smtp({ host: 'smtp.sendgrid.net', port: 2525, auth })]);
 * ```
 */
export function exim(options: EximRouteOptions): EximTransport {
  return new EximRelayTransport(resolveEximOptions(options));
}

const PARAMS = ['name', 'pool', 'maxConnections', 'maxMessages', 'clientName', 'config', 'eximBin', 'logFile'];

/**
 * The `exim` route factory: `exim://USER:PASS@127.0.0.1:587` (the port defaults to 587; a
 * password with reserved characters is percent-encoded), or `{ type: 'exim', user, pass, host?,
 * port?, … }` (host defaults to 127.0.0.1). Query: `name`,
 * `pool`, `maxConnections`, `maxMessages`, `clientName`, and for {@link EximTransport.status}
 * `config`, `eximBin`, `logFile`.
 */
export const eximRoute: RouteFactory = {
  type: 'exim',
  schemes: ['exim'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    onlyParams(url, PARAMS, where);
    const auth = urlCredentials(url);
    if (!auth?.user || !auth.pass) {
      throw new RouteConfigError(
        'credentials',
        'exim:// needs the relay user and password (exim://user:pass@127.0.0.1:587)',
        where,
      );
    }
    const q = url.searchParams;
    const relay = {
      ...(q.get('config') ? { config: q.get('config')! } : {}),
      ...(q.get('eximBin') ? { eximBin: q.get('eximBin')! } : {}),
      ...(q.get('logFile') ? { logFile: q.get('logFile')! } : {}),
    };
    return {
      type: 'exim',
      user: auth.user,
      pass: auth.pass,
      ...(url.hostname ? { host: url.hostname.replace(/^\[|\]$/g, '') } : {}),
      ...(url.port ? { port: Number(url.port) } : {}),
      ...(q.get('name') ? { name: q.get('name') } : {}),
      ...(q.has('pool') ? { pool: boolParam(q.get('pool'), 'query.pool', where) } : {}),
      ...(q.has('maxConnections')
        ? { maxConnections: intParam(q.get('maxConnections'), 'query.maxConnections', where) }
        : {}),
      ...(q.has('maxMessages') ? { maxMessages: intParam(q.get('maxMessages'), 'query.maxMessages', where) } : {}),
      ...(q.get('clientName') ? { clientName: q.get('clientName') } : {}),
      ...(Object.keys(relay).length ? { relay } : {}),
    };
  },
  create(config) {
    const { type: _type, user, pass, auth, ...rest } = config as Record<string, unknown>;
    const credentials =
      auth && typeof auth === 'object'
        ? (auth as { user: string; pass: string })
        : { user: user as string, pass: pass as string };
    return exim({ ...(rest as Omit<EximRouteOptions, 'auth'>), auth: credentials });
  },
};
