import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { extname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';

/**
 * A secret in the organisations file: the value itself, or where to read it, so the file can
 * stay free of secrets (`{ env: 'SCHOOL_A_APP_PASSWORD' }`, `{ file: '/run/secrets/school-a' }`).
 */
export type SecretInput = string | { env: string } | { file: string };

/** One organisation as the organisations file (JSON or YAML) writes it. */
export interface RelayOrganisationInput {
  /** A short stable id: lower case letters, digits, `.`, `_`, `-`. Shown in logs; never a secret. */
  id: string;
  /** How the application authenticates to the relay as this organisation. */
  relay: {
    /** The relay user name. @default the organisation's id */
    user?: string;
    /** The relay password (at least 12 characters). Stored only as a SHA-512 crypt hash. */
    password?: SecretInput;
    /** A crypt(3) hash (`$6$…`, `$5$…`, `$y$…`) instead of the password. */
    passwordHash?: string;
  };
  /** Envelope and From: addresses this organisation may send as: `office@school.example` or `@school.example` (any address at the domain). */
  senders: string[];
  /** Where the relay hands this organisation's mail on, with its own account. */
  upstream: {
    host: string;
    /** 587 (STARTTLS) or 465 (implicit TLS). @default 587 */
    port?: number;
    user: string;
    password: SecretInput;
  };
}

/** One organisation after validation, secrets resolved. */
export interface RelayOrganisation {
  id: string;
  relay: { user: string; password?: string; passwordHash?: string };
  /** Lower-cased: `local@domain` or `*@domain`. */
  senders: string[];
  upstream: { host: string; port: number; user: string; password: string };
}

/** The organisations file is wrong; {@link OrganisationsError.field} names the place. Never carries a secret. */
export class OrganisationsError extends Error {
  readonly code = 'EORGANISATIONS';
  /** The offending field, e.g. `organisations[1].upstream.host`. */
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`Invalid organisations: ${field}: ${problem}`);
    this.name = 'OrganisationsError';
    this.field = field;
  }
}

/** Options of {@link validateOrganisations}. */
export interface ValidateOrganisationsOptions {
  /** Where `{ env }` secrets are read. @default process.env */
  env?: Record<string, string | undefined>;
  /**
   * Allow an upstream on a loopback address (a test upstream, a local TLS tunnel). Off by default:
   * an organisation's upstream is normally a provider such as smtp.gmail.com.
   */
  allowLoopbackUpstream?: boolean;
}

const ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const RELAY_USER = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const HASH = /^\$(1|5|6|y|gy|7|2[abxy])\$[A-Za-z0-9./$=,]+$/;
const LOCAL_PART = /^[a-z0-9][a-z0-9._%+=-]{0,63}$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function isDomain(d: string): boolean {
  if (d.length > 253) return false;
  const labels = d.split('.');
  return labels.length >= 2 && labels.every((l) => LABEL.test(l));
}

function isHost(h: string): boolean {
  if (isIP(h) === 4) return true;
  if (h.length > 253) return false;
  return h.split('.').every((l) => LABEL.test(l));
}

function isLoopback(h: string): boolean {
  return h === 'localhost' || h.endsWith('.localhost') || h.startsWith('127.') || h === '::1';
}

async function resolveSecret(value: unknown, field: string, env: Record<string, string | undefined>): Promise<string> {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const v = value as Record<string, unknown>;
    if (typeof v.env === 'string') {
      const got = env[v.env];
      if (got === undefined || got === '')
        throw new OrganisationsError(field, `environment variable ${v.env} is not set`);
      return got;
    }
    if (typeof v.file === 'string') {
      try {
        return (await readFile(v.file, 'utf8')).replace(/\r?\n$/, '');
      } catch (e) {
        throw new OrganisationsError(field, `cannot read ${v.file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
  }
  throw new OrganisationsError(field, 'must be a string, { env: NAME } or { file: PATH }');
}

/** Normalises one allowed sender to `local@domain` or `*@domain`, lower case. */
function normaliseSender(raw: unknown, field: string): string {
  if (typeof raw !== 'string') throw new OrganisationsError(field, 'must be a string');
  const s = raw.trim().toLowerCase();
  const at = s.lastIndexOf('@');
  if (at < 0) throw new OrganisationsError(field, `${JSON.stringify(raw)} is neither an address nor @domain`);
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  if (!isDomain(domain)) throw new OrganisationsError(field, `${JSON.stringify(raw)}: the domain is not valid`);
  if (local === '' || local === '*') return `*@${domain}`;
  // a plain local part: characters such as ! * ^ + ; : < mean something in Exim's lists
  if (!LOCAL_PART.test(local) || local.endsWith('.') || local.includes('..')) {
    throw new OrganisationsError(field, `${JSON.stringify(raw)}: the local part is not a plain address`);
  }
  return `${local}@${domain}`;
}

function noControl(value: string, field: string): void {
  // a newline or NUL would break the line-based credentials files
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f) throw new OrganisationsError(field, 'contains a control character');
  }
}

/**
 * Validates organisations (from a parsed JSON/YAML document) and resolves their secrets. Refuses
 * what would make the relay unsafe or ambiguous: a duplicate id or relay user, a sender owned by
 * two organisations, a weak relay password, an upstream without credentials.
 */
export async function validateOrganisations(
  input: unknown,
  options: ValidateOrganisationsOptions = {},
): Promise<RelayOrganisation[]> {
  const env = options.env ?? process.env;
  const list = Array.isArray(input)
    ? input
    : input && typeof input === 'object' && Array.isArray((input as { organisations?: unknown }).organisations)
      ? ((input as { organisations: unknown[] }).organisations as unknown[])
      : undefined;
  if (!list) throw new OrganisationsError('organisations', 'expected a list (or an object with an organisations list)');
  if (list.length === 0) throw new OrganisationsError('organisations', 'the list is empty');
  const out: RelayOrganisation[] = [];
  const ids = new Set<string>();
  const users = new Map<string, string>();
  const owners = new Map<string, string>();
  for (const [i, raw] of list.entries()) {
    const at = `organisations[${i}]`;
    if (!raw || typeof raw !== 'object') throw new OrganisationsError(at, 'must be an object');
    const o = raw as Record<string, unknown>;
    if (typeof o.id !== 'string' || !ID.test(o.id)) {
      throw new OrganisationsError(`${at}.id`, 'must be 1-64 lower case letters, digits, ".", "_" or "-"');
    }
    const id = o.id;
    if (ids.has(id)) throw new OrganisationsError(`${at}.id`, `"${id}" appears twice`);
    ids.add(id);

    const relayIn = (o.relay ?? {}) as Record<string, unknown>;
    if (typeof relayIn !== 'object') throw new OrganisationsError(`${at}.relay`, 'must be an object');
    const user = relayIn.user === undefined ? id : relayIn.user;
    if (typeof user !== 'string' || !RELAY_USER.test(user)) {
      throw new OrganisationsError(`${at}.relay.user`, 'must be 1-128 letters, digits, ".", "_", "@", "+" or "-"');
    }
    const userKey = user.toLowerCase();
    if (users.has(userKey)) {
      throw new OrganisationsError(`${at}.relay.user`, `"${user}" is already the relay user of ${users.get(userKey)}`);
    }
    users.set(userKey, id);
    const relay: RelayOrganisation['relay'] = { user: userKey };
    if (relayIn.password !== undefined) {
      const pass = await resolveSecret(relayIn.password, `${at}.relay.password`, env);
      noControl(pass, `${at}.relay.password`);
      if (pass.length < 12) throw new OrganisationsError(`${at}.relay.password`, 'must be at least 12 characters');
      relay.password = pass;
    }
    if (relayIn.passwordHash !== undefined) {
      if (typeof relayIn.passwordHash !== 'string' || !HASH.test(relayIn.passwordHash)) {
        throw new OrganisationsError(`${at}.relay.passwordHash`, 'must be a crypt(3) hash such as $6$salt$hash');
      }
      relay.passwordHash = relayIn.passwordHash;
    }
    if (relay.password === undefined && relay.passwordHash === undefined) {
      throw new OrganisationsError(`${at}.relay`, 'needs a password or a passwordHash');
    }

    if (!Array.isArray(o.senders) || o.senders.length === 0) {
      throw new OrganisationsError(`${at}.senders`, 'must list at least one address or @domain');
    }
    const senders = [...new Set(o.senders.map((s, j) => normaliseSender(s, `${at}.senders[${j}]`)))];
    for (const s of senders) {
      const other = owners.get(s);
      if (other) throw new OrganisationsError(`${at}.senders`, `${s} is already a sender of ${other}`);
    }
    for (const s of senders) owners.set(s, id);

    const up = o.upstream as Record<string, unknown> | undefined;
    if (!up || typeof up !== 'object') throw new OrganisationsError(`${at}.upstream`, 'is required');
    if (typeof up.host !== 'string' || !isHost(up.host.toLowerCase())) {
      throw new OrganisationsError(`${at}.upstream.host`, 'must be a host name or an IPv4 address');
    }
    const host = up.host.toLowerCase();
    if (isLoopback(host) && !options.allowLoopbackUpstream) {
      throw new OrganisationsError(
        `${at}.upstream.host`,
        'is a loopback address (allowed only with allowLoopbackUpstream)',
      );
    }
    const port = up.port === undefined ? 587 : up.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new OrganisationsError(`${at}.upstream.port`, 'must be a TCP port');
    }
    if (port === 25) {
      throw new OrganisationsError(
        `${at}.upstream.port`,
        'port 25 is for MX delivery; use the submission port (587 or 465)',
      );
    }
    if (typeof up.user !== 'string' || up.user === '')
      throw new OrganisationsError(`${at}.upstream.user`, 'is required');
    noControl(up.user, `${at}.upstream.user`);
    if (up.password === undefined) throw new OrganisationsError(`${at}.upstream.password`, 'is required');
    const password = await resolveSecret(up.password, `${at}.upstream.password`, env);
    if (password === '') throw new OrganisationsError(`${at}.upstream.password`, 'is empty');
    noControl(password, `${at}.upstream.password`);
    out.push({ id, relay, senders, upstream: { host, port, user: up.user, password } });
  }
  // a domain owned by one organisation may not cover an address of another
  for (const [sender, owner] of owners) {
    if (sender.startsWith('*@')) continue;
    const domainOwner = owners.get(`*@${sender.slice(sender.indexOf('@') + 1)}`);
    if (domainOwner && domainOwner !== owner) {
      throw new OrganisationsError('senders', `${sender} (of ${owner}) is inside a domain of ${domainOwner}`);
    }
  }
  return out;
}

/** Parses the text of an organisations file: JSON, or YAML (a superset of JSON). */
export function parseOrganisationsText(text: string): unknown {
  try {
    return parseYaml(text, { prettyErrors: true });
  } catch (e) {
    // the YAML error shows the offending line, which may hold a secret: say only where
    const pos = (e as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    throw new OrganisationsError('file', `does not parse as JSON or YAML${pos ? ` (line ${pos.line})` : ''}`);
  }
}

/**
 * Reads organisations from a `.json`/`.yaml`/`.yml` file, or from a module (`.js`/`.mjs`/`.ts`
 * run by a TypeScript-aware Node) whose named export `organisations` is the list or a function
 * returning it — the application's own resolver, so the relay is generated from the same data.
 */
export async function loadOrganisations(
  path: string,
  options: ValidateOrganisationsOptions = {},
): Promise<RelayOrganisation[]> {
  const ext = extname(path).toLowerCase();
  if (['.js', '.mjs', '.cjs', '.ts', '.mts'].includes(ext)) {
    const mod = (await import(pathToFileURL(path).href)) as { organisations?: unknown };
    const value = typeof mod.organisations === 'function' ? await mod.organisations() : mod.organisations;
    if (value === undefined) throw new OrganisationsError('module', `${path} has no named export "organisations"`);
    return validateOrganisations(value, options);
  }
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new OrganisationsError('file', `cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return validateOrganisations(parseOrganisationsText(text), options);
}
