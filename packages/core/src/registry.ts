import { capture, type Outbox } from './capture.js';
import { type CompositeOptions, failover, roundRobin } from './composite.js';
import { RouteConfigError } from './errors.js';
import { checkQuota, parseQuota, withQuota } from './quota.js';
import type { RouteStateStore } from './route-state.js';
import { smtp } from './smtp.js';
import type { Transport } from './spec.js';

/** A route as data: `{ type: 'smtp', host: '…', … }`. Each factory documents its fields. */
export interface RouteConfig {
  type: string;
  [field: string]: unknown;
}

/**
 * A route description: a URL string (`smtp://user:pass@host:587`, `failover(a b)`), a
 * {@link RouteConfig}, an array (a failover chain), or a ready {@link Transport}.
 */
export type RouteSpec = string | RouteConfig | Transport | readonly RouteSpec[];

/** What a factory gets besides the config: shared pieces of the mailer. */
export interface RouteContext {
  /** The outbox of `capture` routes. */
  outbox: Outbox;
  /** Where composites remember resting routes. */
  state: RouteStateStore;
  /** Key prefix for `state` (the organisation). */
  stateKey: string;
  /** Builds a nested spec (for routes that wrap other routes). */
  build(spec: RouteSpec): Transport;
}

/**
 * Turns route data into a {@link Transport}. Route packages export one (or several) and the
 * application hands them to the mailer: core names none of them.
 */
export interface RouteFactory {
  /** The `type` of the route data it builds, e.g. `smtp`, `exim`, `sendgrid+api`. */
  type: string;
  /** URL schemes it parses, e.g. `['smtp', 'smtps']`. */
  schemes: readonly string[];
  /** Parses a URL into route data. Must throw a {@link RouteConfigError} naming the bad part, without the password. */
  fromUrl(url: URL): RouteConfig;
  /** Builds the route. Must throw a {@link RouteConfigError} for bad data. */
  create(config: RouteConfig, context: RouteContext): Transport;
}

const SECRET_PARAM = /(secret|token|key|pass|password|credential|auth)/i;

/**
 * Shows a URL (or a chain of URLs) without secrets, for error messages: the password of the
 * user info, a user info that is a key on its own (`sendgrid+api://KEY@default`), and query
 * parameters named like a secret (`clientSecret`, `refreshToken`, `apiKey`…).
 */
export function maskUrl(raw: string): string {
  return raw
    .replace(/([a-z][a-z0-9+.-]*:\/\/)([^@/?#\s]*)@/gi, (_m, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':');
      if (colon >= 0) return `${scheme}${userinfo.slice(0, colon)}:****@`;
      // a lone user info is a user name (an address) or, in some schemes, an API key
      return `${scheme}${/^[^%@]+(%40|@)[^%@]+$/.test(userinfo) ? userinfo : '****'}@`;
    })
    .replace(/^([^:/@\s]+):([^@\s/]*)@/, '$1:****@')
    .replace(/([?&])([^=&\s]+)=([^&\s)]*)/g, (m, sep: string, key: string, value: string) => {
      if (SECRET_PARAM.test(key)) return `${sep}${key}=****`;
      // a URL nested in a parameter (?proxy=socks5h://user:pass@…), possibly percent-encoded
      let decoded = value;
      try {
        decoded = decodeURIComponent(value);
      } catch {
        // not percent-encoded
      }
      return decoded.includes('://') ? `${sep}${key}=${maskUrl(decoded)}` : m;
    });
}

/** Reads a numeric URL/query value; throws a RouteConfigError naming `part`. */
export function intParam(value: string | null | undefined, part: string, where: string): number | undefined {
  if (value === null || value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new RouteConfigError(part, `${JSON.stringify(value)} is not a whole number`, where);
  return Number(value);
}

/** Reads a boolean query value (`true/false/1/0/yes/no`). */
export function boolParam(value: string | null, part: string, where: string): boolean | undefined {
  if (value === null || value === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new RouteConfigError(part, `${JSON.stringify(value)} is not true or false`, where);
}

/** The user and password of a URL, percent-decoded. */
export function urlCredentials(url: URL): { user: string; pass: string } | undefined {
  if (!url.username && !url.password) return undefined;
  return { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) };
}

/** Fails on query parameters a factory does not know (a typo must not be ignored silently). */
export function onlyParams(url: URL, known: readonly string[], where: string): void {
  for (const key of url.searchParams.keys()) {
    if (!known.includes(key))
      throw new RouteConfigError(`query.${key}`, `unknown parameter (known: ${known.join(', ') || 'none'})`, where);
  }
}

/** The `smtp` / `smtps` factory of core. Fields: those of {@link smtp}'s options. */
export const smtpRoute: RouteFactory = {
  type: 'smtp',
  schemes: ['smtp', 'smtps'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    const secure = url.protocol === 'smtps:';
    if (!url.hostname) throw new RouteConfigError('host', 'is missing', where);
    onlyParams(url, ['requireTLS', 'pool', 'maxConnections', 'clientName', 'name', 'servername'], where);
    const auth = urlCredentials(url);
    const q = url.searchParams;
    return {
      type: 'smtp',
      host: url.hostname.replace(/^\[|\]$/g, ''),
      secure,
      ...(url.port ? { port: Number(url.port) } : {}),
      ...(auth ? { auth } : {}),
      ...(q.has('requireTLS') ? { requireTLS: boolParam(q.get('requireTLS'), 'query.requireTLS', where) } : {}),
      ...(q.has('pool') ? { pool: boolParam(q.get('pool'), 'query.pool', where) } : {}),
      ...(q.has('maxConnections')
        ? { maxConnections: intParam(q.get('maxConnections'), 'query.maxConnections', where) }
        : {}),
      ...(q.get('clientName') ? { clientName: q.get('clientName') } : {}),
      ...(q.get('name') ? { name: q.get('name') } : {}),
      ...(q.get('servername') ? { tls: { servername: q.get('servername') } } : {}),
    };
  },
  create(config) {
    const { type: _t, ...options } = config;
    return smtp(options as unknown as Parameters<typeof smtp>[0]);
  },
};

/** The `capture` factory of core: `capture://` or `{ type: 'capture' }`. */
export const captureRoute: RouteFactory = {
  type: 'capture',
  schemes: ['capture'],
  fromUrl(url) {
    onlyParams(url, ['name'], maskUrl(url.href));
    const name = url.searchParams.get('name');
    return { type: 'capture', ...(name ? { name } : {}) };
  },
  create(config, context) {
    return capture({ outbox: context.outbox, ...(typeof config.name === 'string' ? { name: config.name } : {}) });
  },
};

function isTransport(spec: unknown): spec is Transport {
  return typeof spec === 'object' && spec !== null && 'send' in spec && typeof (spec as Transport).send === 'function';
}

/** Splits `a b c` at depth 0 (parentheses nest). */
function splitTop(inner: string, where: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of inner) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0) throw new RouteConfigError('parentheses', 'a ) has no matching (', where);
    if (/\s/.test(ch) && depth === 0) {
      if (cur) out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw new RouteConfigError('parentheses', 'a ( is not closed', where);
  if (cur) out.push(cur);
  return out;
}

/** Turns {@link RouteSpec}s into Transports with a set of factories. */
export class RouteRegistry {
  private readonly byType = new Map<string, RouteFactory>();
  private readonly byScheme = new Map<string, RouteFactory>();

  constructor(factories: readonly RouteFactory[] = []) {
    for (const f of [smtpRoute, captureRoute, ...factories]) this.add(f);
  }

  /** Adds a factory; a later one for the same type or scheme replaces the earlier. */
  add(factory: RouteFactory): this {
    this.byType.set(factory.type, factory);
    for (const s of factory.schemes) this.byScheme.set(s.toLowerCase(), factory);
    return this;
  }

  /** The types this registry knows. */
  types(): string[] {
    return [...this.byType.keys()];
  }

  /** Parses a URL string into route data (composites stay strings inside arrays). */
  parse(raw: string): RouteConfig | RouteSpec[] | { composite: 'failover' | 'roundrobin'; routes: RouteSpec[] } {
    const text = raw.trim();
    const where = maskUrl(text);
    if (/^(failover|roundrobin)\(/i.test(text) && !text.endsWith(')')) {
      throw new RouteConfigError('parentheses', 'a ( is not closed', where);
    }
    const comp = /^(failover|roundrobin)\(([\s\S]*)\)$/i.exec(text);
    if (comp) {
      const parts = splitTop(comp[2]!, where);
      if (parts.length === 0) throw new RouteConfigError(comp[1]!.toLowerCase(), 'lists no route', where);
      return { composite: comp[1]!.toLowerCase() as 'failover' | 'roundrobin', routes: parts };
    }
    const m = /^([a-z][a-z0-9+.-]*):/i.exec(text);
    if (!m) throw new RouteConfigError('scheme', 'the route has no scheme (e.g. smtp://, capture://)', where);
    const scheme = m[1]!.toLowerCase();
    const factory = this.byScheme.get(scheme);
    if (!factory) {
      throw new RouteConfigError(
        'scheme',
        `"${scheme}" is not a known route (known: ${[...this.byScheme.keys()].join(', ')}); is its package passed to the mailer?`,
        where,
      );
    }
    const authority = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?([^/?#]*)/i.exec(text)?.[1] ?? '';
    const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/.exec(authority)?.[1];
    if (port !== undefined && !/^\d{1,5}$/.test(port)) {
      throw new RouteConfigError('port', `${JSON.stringify(port)} is not a TCP port`, where);
    }
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new RouteConfigError(
        'url',
        'does not parse as a URL (is a character in the password not percent-encoded?)',
        where,
      );
    }
    // `quota` is the engine's, valid on every route: taken off before the factory sees the URL
    const quota = url.searchParams.get('quota');
    url.searchParams.delete('quota');
    const config = factory.fromUrl(url);
    return quota === null ? config : { ...config, quota: parseQuota(quota, where) };
  }

  /**
   * Builds a Transport from a spec. An array is a failover chain; `failover(…)` and
   * `roundrobin(…)` URLs nest.
   */
  build(spec: RouteSpec, context: Omit<RouteContext, 'build'>, options: CompositeOptions = {}): Transport {
    const ctx: RouteContext = { ...context, build: (s) => this.build(s, context) };
    const composite = { state: context.state, stateKey: context.stateKey, ...options };
    if (isTransport(spec)) return spec;
    if (Array.isArray(spec)) {
      const routes = spec.map((s) => this.build(s, context));
      return routes.length === 1 ? routes[0]! : failover(routes, composite);
    }
    if (typeof spec === 'string') {
      const parsed = this.parse(spec);
      if (Array.isArray(parsed)) return this.build(parsed, context, options);
      if ('composite' in parsed && typeof parsed.composite === 'string') {
        const c = parsed as { composite: 'failover' | 'roundrobin'; routes: RouteSpec[] };
        const routes = c.routes.map((s) => this.build(s, context));
        return c.composite === 'failover' ? failover(routes, composite) : roundRobin(routes, composite);
      }
      return this.build(parsed as RouteConfig, context, options);
    }
    const config = spec as RouteConfig;
    if (typeof config.type !== 'string') throw new RouteConfigError('type', 'is missing from the route object');
    if (config.type === 'failover' || config.type === 'roundrobin') {
      const list = (config as { routes?: unknown }).routes;
      if (!Array.isArray(list) || list.length === 0)
        throw new RouteConfigError('routes', `a ${config.type} needs a list of routes`);
      const routes = (list as RouteSpec[]).map((s) => this.build(s, context));
      return config.type === 'failover' ? failover(routes, composite) : roundRobin(routes, composite);
    }
    const factory = this.byType.get(config.type);
    if (!factory) {
      throw new RouteConfigError('type', `"${config.type}" is not a known route (known: ${this.types().join(', ')})`);
    }
    if (config.quota === undefined) return factory.create(config, ctx);
    const { quota, ...rest } = config;
    return withQuota(factory.create(rest as RouteConfig, ctx), checkQuota(quota), context.state, context.stateKey);
  }
}
