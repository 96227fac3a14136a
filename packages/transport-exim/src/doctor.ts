import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { MailError, redact, smtp } from '@mailvia/core';
import {
  distributionChangelogMentions,
  type EximCommandOptions,
  type EximVersion,
  eximCheckConfig,
  eximOptions,
  olderThan,
} from './exim.js';
import { GENERATED_MARKER } from './generate.js';
import { type Diagnosis, diagnose, diagnoseAttempt, mainLogPath, parseLogLine, readLogTail } from './logs.js';
import type { RelayOrganisation } from './organisations.js';
import { SmtpProbe } from './probe.js';
import { listQueue, type QueuedMessage } from './queue.js';

/** Options of {@link runDoctor}. */
export interface DoctorOptions extends EximCommandOptions {
  /** The relay's address. @default the first loopback address of `local_interfaces`, else 127.0.0.1 */
  host?: string;
  /** The relay's port. @default 587 when `daemon_smtp_ports` lists it, else its first port */
  port?: number;
  /** The organisations (with their relay passwords) to test AUTH, senders and upstreams for. */
  organisations?: RelayOrganisation[];
  /** The relay's main log. @default from `log_file_path` */
  logFile?: string;
  /** Directory of the credentials files. @default read from the configuration's MAILVIA_DIR */
  dataDir?: string;
  /** How far back to read the log. @default 24 */
  sinceHours?: number;
  /** Also log in to each upstream with the organisation's account (a real login). @default false */
  upstreamAuth?: boolean;
  /** CA (PEM) the upstreams' certificates chain to, when not the system's (tests). */
  upstreamCa?: string;
  /** Network timeout of each probe, ms. @default 5000 */
  probeTimeout?: number;
  /** "Now", for reading the log window (tests). @default new Date() */
  now?: Date;
}

/** One check of the doctor. */
export interface DoctorCheck {
  /** A stable id, e.g. `listening`, `auth:school-a`, `queue`. */
  id: string;
  /** `ok`, `info` (nothing wrong), `warn`, `fail`, `skip` (could not be checked). */
  status: 'ok' | 'info' | 'warn' | 'fail' | 'skip';
  title: string;
  /** Facts behind the result (never a secret). */
  detail?: string[];
  /** What to do. */
  advice?: string;
}

/** The doctor's findings. */
export interface DoctorReport {
  checks: DoctorCheck[];
  version?: EximVersion;
  queue?: QueuedMessage[];
  relay: { host: string; port: number };
  /** 0 healthy, 1 warnings, 2 failures (see {@link doctorExitCode}). */
  exitCode: 0 | 1 | 2;
}

/**
 * Exit codes of `mailvia-exim doctor`: 0 every check passed; 1 warnings only; 2 at least one
 * check failed; 3 the doctor could not run (bad arguments, Exim or a file not found).
 */
export function doctorExitCode(checks: readonly DoctorCheck[]): 0 | 1 | 2 {
  if (checks.some((c) => c.status === 'fail')) return 2;
  if (checks.some((c) => c.status === 'warn')) return 1;
  return 0;
}

const PORT_NAMES: Record<string, number> = { smtp: 25, submission: 587, smtps: 465, submissions: 465 };

function relayAddress(o: Record<string, string>): { host: string; port: number } {
  const ifaces = (o.local_interfaces ?? '').replace(/^<;\s*/, '').split(/\s*[;:]\s*(?![0-9a-f]*:)/i);
  const host =
    ifaces.map((s) => s.trim().replace(/^(\d+\.\d+\.\d+\.\d+)\.\d+$/, '$1')).find((s) => /^127\.|^::1$/.test(s)) ??
    '127.0.0.1';
  const ports = (o.daemon_smtp_ports ?? '')
    .split(/\s*:\s*/)
    .map((p) => (PORT_NAMES[p.trim()] ?? Number(p.trim())) || 0)
    .filter((p) => p > 0);
  return { host, port: ports.includes(587) ? 587 : (ports[0] ?? 587) };
}

function senderToTry(org: RelayOrganisation): string {
  const exact = org.senders.find((s) => !s.startsWith('*@'));
  return exact ?? `mailvia-doctor@${org.senders[0]!.slice(2)}`;
}

/**
 * Checks a relay the way an operator would, in order: Exim's version (and the fixes that matter),
 * its configuration (immediate delivery, loopback only), the credentials files, that it listens,
 * that it refuses unauthenticated relaying, that each organisation can authenticate and is held
 * to its own senders, that each upstream can be reached over TLS, what the recent log lines mean
 * (a refused App Password, Google blocking the IP, a daily limit) and what is queued, and why.
 * Sends no mail.
 */
export async function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const add = (c: DoctorCheck) => checks.push(c);
  const orgs = options.organisations ?? [];
  const secrets = orgs.flatMap((o) => [o.relay.password, o.upstream.password]);
  const clean = (s: string) => redact(s, secrets);
  const timeout = options.probeTimeout ?? 5000;
  const exim: EximCommandOptions = {
    ...(options.eximBin ? { eximBin: options.eximBin } : {}),
    ...(options.config ? { config: options.config } : {}),
    ...(options.timeout ? { timeout: options.timeout } : {}),
  };
  const now = options.now ?? new Date();

  // --- Exim itself: version, configuration check
  const bv = await eximCheckConfig(exim);
  const version = bv.version;
  if (!bv.ok) {
    add({
      id: 'config-valid',
      status: 'fail',
      title: 'Exim refuses the configuration',
      detail: bv.output.split('\n').filter((l) => /error|line \d+/i.test(l)),
      advice: 'Fix the configuration (regenerate it with mailvia-exim generate) and run exim -bV again.',
    });
  } else
    add({
      id: 'config-valid',
      status: 'ok',
      title: `the configuration is valid (exim -bV${options.config ? ` -C ${options.config}` : ''})`,
    });
  if (version) {
    add({ id: 'version', status: 'info', title: `Exim ${version.version}`, detail: [version.banner] });
    if (olderThan(version.parts, [4, 97, 1])) {
      const patched = await distributionChangelogMentions(/CVE-2023-51766/);
      add(
        patched
          ? {
              id: 'cve-2023-51766',
              status: 'ok',
              title: `SMTP smuggling (CVE-2023-51766): fixed by the distribution's patch (${patched})`,
            }
          : {
              id: 'cve-2023-51766',
              status: 'warn',
              title: `Exim ${version.version} is older than 4.97.1, which fixes SMTP smuggling (CVE-2023-51766)`,
              advice:
                'Upgrade Exim, or check that your distribution back-ported the fix. The relay listens on loopback only, which limits who can smuggle, but the upstream path is not protected.',
            },
      );
    }
    if (olderThan(version.parts, [4, 98, 0])) {
      const patched = await distributionChangelogMentions(/fdatasync|fsync.*(spool|data file)/i);
      add(
        patched
          ? { id: 'data-fsync', status: 'ok', title: `spool data file synced before the ack: patched (${patched})` }
          : {
              id: 'data-fsync',
              status: 'warn',
              title: `Exim ${version.version} acknowledges a message before syncing its data file to disk (fixed in 4.98)`,
              advice:
                'A crash or power loss right after the relay said 250 can lose a message the application counts as accepted by the relay. Upgrade to Exim 4.98 or later where you can.',
            },
      );
    }
  } else add({ id: 'version', status: 'skip', title: 'the Exim version could not be read' });

  // --- immediate delivery and listening address, from Exim's own view of the configuration
  const o = await eximOptions(
    [
      'smtp_accept_queue_per_connection',
      'queue_only',
      'queue_only_load',
      'queue_smtp_domains',
      'smtp_accept_queue',
      'local_interfaces',
      'daemon_smtp_ports',
      'log_file_path',
      'spool_directory',
      'pid_file_path',
      'exim_user',
    ],
    exim,
  );
  const qpc = Number(o.smtp_accept_queue_per_connection ?? '10');
  if (qpc !== 0) {
    add({
      id: 'queue-per-connection',
      status: 'fail',
      title: `smtp_accept_queue_per_connection = ${qpc}: from the ${qpc + 1}th message of a connection on, mail only waits in the queue`,
      detail: ['A pooled client sees such mail accepted, and it leaves at the next queue run (Debian: every 30 min).'],
      advice: 'Set smtp_accept_queue_per_connection = 0 (the generated configuration does).',
    });
  } else
    add({
      id: 'queue-per-connection',
      status: 'ok',
      title: 'every message is delivered at once (smtp_accept_queue_per_connection = 0)',
    });
  if (o.queue_only === 'true') {
    add({
      id: 'queue-only',
      status: 'fail',
      title: 'queue_only is set: no message is delivered until a queue run',
      advice: 'Remove queue_only from the relay configuration.',
    });
  }
  for (const [name, what] of [
    ['queue_only_load', 'under load, mail waits for a queue run'],
    ['queue_smtp_domains', 'mail for these domains waits for a queue run'],
  ] as const) {
    if (o[name]) add({ id: name.replace(/_/g, '-'), status: 'warn', title: `${name} = ${o[name]}: ${what}` });
  }
  if (Number(o.smtp_accept_queue ?? 0) > 0) {
    add({
      id: 'smtp-accept-queue',
      status: 'warn',
      title: `smtp_accept_queue = ${o.smtp_accept_queue}: above that many connections, mail only waits in the queue`,
    });
  }
  let configText: string | undefined;
  if (options.config) configText = await readFile(options.config, 'utf8').catch(() => undefined);
  const generated = configText?.includes(GENERATED_MARKER) ?? false;
  if (generated && o.local_interfaces) {
    const ifaces = o.local_interfaces
      .replace(/^<;\s*/, '')
      .split(/\s*;\s*/)
      .filter(Boolean);
    const open = ifaces.filter((i) => !/^(127\.\d+\.\d+\.\d+|::1)(\.\d+)?$/.test(i));
    add(
      open.length
        ? {
            id: 'loopback-only',
            status: 'fail',
            title: `the relay listens beyond loopback: ${open.join(', ')}`,
            advice: 'Regenerate the configuration: the relay must listen on 127.0.0.1 only.',
          }
        : { id: 'loopback-only', status: 'ok', title: `the relay listens on loopback only (${ifaces.join(', ')})` },
    );
  }

  // --- a queue runner retries what was deferred
  if (o.pid_file_path) {
    const pidFile = o.pid_file_path.replace('%s', '');
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0 && existsSync(`/proc/${pid}/cmdline`)) {
      const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
      const q = args.find((a) => /^-q/.test(a));
      add(
        q
          ? { id: 'queue-runner', status: 'ok', title: `the daemon (pid ${pid}) runs the queue (${q})` }
          : {
              id: 'queue-runner',
              status: 'warn',
              title: `the daemon (pid ${pid}) was started without -q: deferred mail is never retried`,
              advice: 'Start it with -bd -q5m (or run exim -q from cron).',
            },
      );
    }
  }

  // --- credentials files: 0600, owned by the Exim user
  const dataDir = options.dataDir ?? /^MAILVIA_DIR = (\S+)/m.exec(configText ?? '')?.[1];
  if (dataDir) {
    const eximUid = (() => {
      try {
        return Number(
          execFileSync('id', ['-u', o.exim_user ?? 'Debian-exim'], {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'ignore'],
          }),
        );
      } catch {
        return undefined;
      }
    })();
    for (const name of ['relay-users', 'upstreams']) {
      const path = `${dataDir}/${name}`;
      const st = await stat(path).catch(() => undefined);
      if (!st) {
        if (name === 'upstreams' || !/dovecot/.test(configText ?? '')) {
          add({ id: `file:${name}`, status: name === 'upstreams' ? 'fail' : 'skip', title: `${path} is missing` });
        }
        continue;
      }
      const loose = (st.mode & 0o077) !== 0;
      const owner = eximUid !== undefined && st.uid !== eximUid && st.uid !== 0;
      add(
        loose
          ? {
              id: `file:${name}`,
              status: 'fail',
              title: `${path} is readable by others (mode 0${(st.mode & 0o777).toString(8)})`,
              advice: `chmod 600 ${path} (regenerating writes it 0600).`,
            }
          : owner
            ? {
                id: `file:${name}`,
                status: 'warn',
                title: `${path} is not owned by the Exim user ${o.exim_user ?? ''}`,
              }
            : {
                id: `file:${name}`,
                status: 'ok',
                title: `${path} is private (mode 0${(st.mode & 0o777).toString(8)})`,
              },
      );
    }
  }

  // --- the relay answers, refuses strangers, and knows each organisation
  const relay = { host: options.host ?? relayAddress(o).host, port: options.port ?? relayAddress(o).port };
  let listening = false;
  try {
    const { probe, greeting } = await SmtpProbe.open(relay.host, relay.port, timeout);
    listening = greeting.code === 220;
    add(
      listening
        ? {
            id: 'listening',
            status: 'ok',
            title: `the relay answers on ${relay.host}:${relay.port}`,
            detail: [greeting.text],
          }
        : { id: 'listening', status: 'fail', title: `${relay.host}:${relay.port} greets with ${greeting.text}` },
    );
    if (listening) {
      const ehlo = await probe.command('EHLO mailvia-doctor.localhost');
      const auth = ehlo.lines.find((l) => /^AUTH\b/i.test(l));
      if (!auth || !/\b(PLAIN|LOGIN)\b/i.test(auth)) {
        add({
          id: 'auth-offered',
          status: 'fail',
          title: 'the relay does not offer AUTH PLAIN or LOGIN',
          advice: 'The relay must authenticate organisations: check the authenticators (and auth_advertise_hosts).',
        });
      } else add({ id: 'auth-offered', status: 'ok', title: `the relay offers ${auth}` });
      const mail = await probe.command('MAIL FROM:<mailvia-doctor@example.invalid>');
      const rcpt = mail.code < 400 ? await probe.command('RCPT TO:<mailvia-doctor-probe@example.invalid>') : mail;
      add(
        rcpt.code >= 500
          ? { id: 'no-open-relay', status: 'ok', title: 'unauthenticated relaying is refused', detail: [rcpt.text] }
          : rcpt.code >= 400
            ? {
                id: 'no-open-relay',
                status: 'warn',
                title: 'unauthenticated relaying is deferred, not refused',
                detail: [rcpt.text],
              }
            : {
                id: 'no-open-relay',
                status: 'fail',
                title: 'the relay accepts mail from anyone without authentication: an open relay',
                detail: [rcpt.text],
                advice: 'Regenerate the configuration; never run the relay on a non-loopback address.',
              },
      );
      await probe.close();
    } else await probe.close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    add({
      id: 'listening',
      status: 'fail',
      title: `nothing answers on ${relay.host}:${relay.port}${code ? ` (${code})` : ''}`,
      advice: `Start the relay (exim4 -C CONFIG -bd -q5m) or check daemon_smtp_ports / local_interfaces. Routes through it fail over at once meanwhile.`,
    });
  }
  if (listening) {
    for (const org of orgs) {
      if (!org.relay.password) {
        add({
          id: `auth:${org.id}`,
          status: 'skip',
          title: `${org.id}: no relay password in the organisations file (only a hash): AUTH not tested`,
        });
        continue;
      }
      try {
        const { probe } = await SmtpProbe.open(relay.host, relay.port, timeout);
        await probe.command('EHLO mailvia-doctor.localhost');
        const a = await probe.authPlain(org.relay.user, org.relay.password);
        if (a.code !== 235) {
          add({
            id: `auth:${org.id}`,
            status: 'fail',
            title: `${org.id}: the relay refuses its relay user ${org.relay.user}`,
            detail: [clean(a.text)],
            advice: 'The relay has other credentials than the organisations file: regenerate the relay from it.',
          });
          await probe.close();
          continue;
        }
        const own = senderToTry(org);
        const ok = await probe.command(`MAIL FROM:<${own}>`);
        await probe.command('RSET');
        const foreign = await probe.command('MAIL FROM:<mailvia-doctor@not-a-sender-of-this-organisation.invalid>');
        await probe.close();
        if (ok.code !== 250) {
          add({
            id: `auth:${org.id}`,
            status: 'fail',
            title: `${org.id}: authenticates, but the relay refuses its own sender ${own}`,
            detail: [clean(ok.text)],
            advice: 'Regenerate the relay from the organisations file.',
          });
        } else if (foreign.code < 400) {
          add({
            id: `auth:${org.id}`,
            status: 'fail',
            title: `${org.id}: authenticates, and the relay lets it send as any address`,
            advice: 'The sender check is missing: regenerate the relay configuration.',
          });
        } else {
          add({
            id: `auth:${org.id}`,
            status: 'ok',
            title: `${org.id}: AUTH works as ${org.relay.user}; it may send only as its senders`,
          });
        }
      } catch (e) {
        add({
          id: `auth:${org.id}`,
          status: 'fail',
          title: `${org.id}: the AUTH probe failed: ${clean((e as Error).message)}`,
        });
      }
    }
  }

  // --- the log: what recent lines mean; the queue: what waits, and why
  const logFile = options.logFile ?? mainLogPath(o.log_file_path, o.spool_directory);
  const since = now.getTime() - (options.sinceHours ?? 24) * 3600_000;
  let lines: ReturnType<typeof parseLogLine>[] = [];
  if (!logFile) add({ id: 'log', status: 'skip', title: 'the relay logs to syslog only: pass --log' });
  else {
    try {
      lines = (await readLogTail(logFile)).map(parseLogLine);
    } catch (e) {
      add({
        id: 'log',
        status: 'skip',
        title: `cannot read ${logFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      });
    }
  }
  const userToOrg = new Map(orgs.map((x) => [x.relay.user, x.id]));
  const orgOfId = new Map<string, string>();
  for (const l of lines) {
    if (l.flag === '<=' && l.queueId) {
      const user = / A=[^:\s]+:(\S+)/.exec(l.text)?.[1];
      if (user) orgOfId.set(l.queueId, userToOrg.get(user) ?? user);
    }
  }
  const lastSuccess = new Map<string, string>();
  const findings = new Map<string, { d: Diagnosis; count: number; last: string; example: string; orgs: Set<string> }>();
  const note = (d: Diagnosis, l: (typeof lines)[number]) => {
    const org = l.queueId ? orgOfId.get(l.queueId) : undefined;
    const f = findings.get(d.id) ?? { d, count: 0, last: '', example: '', orgs: new Set<string>() };
    f.count++;
    f.last = l.time ?? '';
    f.example = clean(l.raw).slice(0, 300);
    if (org) f.orgs.add(org);
    findings.set(d.id, f);
  };
  // one meaning per delivery attempt: the upstream's reply on one line, Exim's summary on the next
  let attempt: (typeof lines)[number][] = [];
  const closeAttempt = () => {
    const d = diagnoseAttempt(attempt.map((l) => l.text));
    if (d && d.id !== 'retry-wait') note(d, attempt.find((l) => diagnose(l.text)?.id === d.id) ?? attempt.at(-1)!);
    attempt = [];
  };
  for (const l of lines) {
    const t = l.time ? Date.parse(l.time.replace(' ', 'T')) : Number.NaN;
    if (!Number.isNaN(t) && t < since) continue;
    // this doctor's own probes are not news
    if (l.raw.includes('mailvia-doctor')) continue;
    if (l.flag === '=>') {
      // H=name [address]:port (the port is logged with +outgoing_port, as the generated relay does)
      const h = / H=(\S+) \[[^\]]+\](?::(\d+))?/.exec(l.text);
      if (h && l.time) lastSuccess.set(h[2] ? `${h[1]}:${h[2]}` : h[1]!, l.time);
      continue;
    }
    if (l.flag === '<=' || l.flag === 'Completed') continue;
    if (!l.queueId) {
      const d = diagnose(l.text);
      if (d && d.id !== 'retry-wait') note(d, l);
      continue;
    }
    if (attempt.length && attempt[0]!.queueId !== l.queueId) closeAttempt();
    attempt.push(l);
    if (l.flag === '==' || l.flag === '**') closeAttempt();
  }
  if (attempt.length) closeAttempt();
  for (const f of findings.values()) {
    add({
      id: `log:${f.d.id}`,
      status: f.d.severity === 'info' ? 'info' : 'warn',
      title: `log: ${f.d.title}${f.orgs.size ? ` — ${[...f.orgs].join(', ')}` : ''} (${f.count}×, last ${f.last})`,
      detail: [f.example],
      advice: f.d.advice,
    });
  }
  if (logFile && lines.length && findings.size === 0) {
    add({ id: 'log', status: 'ok', title: `no trouble in the relay log over the last ${options.sinceHours ?? 24} h` });
  }

  let queue: QueuedMessage[] | undefined;
  try {
    queue = await listQueue(exim);
    if (queue.length === 0) add({ id: 'queue', status: 'ok', title: 'the queue is empty' });
    else {
      const detail: string[] = [];
      let serious = false;
      for (const q of queue.slice(0, 20)) {
        const mine = lines.filter((l) => l.queueId === q.queueId && l.flag !== '<=');
        const lastLine = mine.filter((l) => l.flag === '==' || l.flag === '**').at(-1);
        const why = lastLine ? diagnoseAttempt(mine.map((l) => l.text)) : undefined;
        if (why && why.severity === 'error') serious = true;
        const org = orgOfId.get(q.queueId);
        detail.push(
          `${q.queueId} ${q.age} ${q.sender}${org ? ` [${org}]` : ''}${q.frozen ? ' FROZEN' : ''} → ${q.recipients
            .filter((r) => !r.delivered)
            .map((r) => r.address)
            .join(
              ', ',
            )}${why ? `: ${why.title}` : lastLine ? `: ${clean(lastLine.text.replace(/^\S+ \S+ /, '')).slice(0, 160)}` : ': not tried yet'}`,
        );
      }
      if (queue.length > 20) detail.push(`… and ${queue.length - 20} more`);
      add({
        id: 'queue',
        status: serious || queue.some((q) => q.frozen) ? 'fail' : 'warn',
        title: `${queue.length} message${queue.length === 1 ? '' : 's'} waiting in the relay's queue${queue.some((q) => q.frozen) ? ` (${queue.filter((q) => q.frozen).length} frozen)` : ''}`,
        detail,
        advice: 'Fix the cause named for each message; Exim retries at the next queue run (exim -qff retries now).',
      });
    }
  } catch (e) {
    add({
      id: 'queue',
      status: 'skip',
      title: `cannot list the queue: ${(e as Error).message.split('\n')[0]}`,
      advice: 'Run the doctor as root or an Exim admin user.',
    });
  }

  // --- each upstream can be reached over TLS from here
  const upstreams = new Map<string, RelayOrganisation[]>();
  for (const org of orgs) {
    const k = `${org.upstream.host}:${org.upstream.port}`;
    upstreams.set(k, [...(upstreams.get(k) ?? []), org]);
  }
  for (const [k, list] of upstreams) {
    const first = list[0]!;
    const tls = {
      ...(isIP(first.upstream.host) ? {} : { servername: first.upstream.host }),
      ...(options.upstreamCa ? { ca: options.upstreamCa } : {}),
    };
    const base = {
      host: first.upstream.host,
      port: first.upstream.port,
      secure: first.upstream.port === 465,
      requireTLS: true,
      tls,
      pool: false,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
    };
    const targets = options.upstreamAuth
      ? list.map((org) => ({
          label: `${org.id} at ${k}`,
          route: smtp({ ...base, auth: { user: org.upstream.user, pass: org.upstream.password } }),
          id: `upstream:${org.id}`,
        }))
      : [{ label: `${k} (${list.map((x) => x.id).join(', ')})`, route: smtp(base), id: `upstream:${k}` }];
    for (const t of targets) {
      try {
        await t.route.verify!();
        add({
          id: t.id,
          status: 'ok',
          title: `upstream ${t.label}: reachable over verified TLS${options.upstreamAuth ? ', login accepted' : ''}`,
        });
      } catch (e) {
        const err = MailError.isInstance(e) ? e : undefined;
        const message = clean((e as Error).message);
        const delivered = lastSuccess.get(k) ?? lastSuccess.get(first.upstream.host);
        const diag = diagnose(message);
        add({
          id: t.id,
          status: delivered && err?.phase === 'connect' ? 'warn' : 'fail',
          title: `upstream ${t.label}: ${err?.phase === 'auth' ? 'login refused' : 'not reachable from here'}${diag ? ` — ${diag.title}` : ''}`,
          detail: [message, ...(delivered ? [`the relay delivered to ${first.upstream.host} at ${delivered}`] : [])],
          advice:
            err?.phase === 'auth'
              ? (diag?.advice ?? 'Check the upstream user and password in the organisations file.')
              : 'If only the MTA may reach outside ports (cPanel SMTP Restrictions, a firewall), this probe fails while Exim succeeds: see the relay log lines above.',
        });
      }
    }
  }
  if (orgs.length === 0) {
    add({
      id: 'organisations',
      status: 'skip',
      title: 'no organisations file given: AUTH, senders and upstreams not tested',
      advice: 'Pass --orgs FILE.',
    });
  }
  const exitCode = doctorExitCode(checks);
  return { checks, ...(version ? { version } : {}), ...(queue ? { queue } : {}), relay, exitCode };
}

const MARK: Record<DoctorCheck['status'], string> = {
  ok: 'ok  ',
  info: 'info',
  warn: 'WARN',
  fail: 'FAIL',
  skip: 'skip',
};

/** The report as text for a terminal. */
export function formatDoctorReport(report: DoctorReport): string {
  const out: string[] = [`mailvia-exim doctor — relay ${report.relay.host}:${report.relay.port}`, ''];
  for (const c of report.checks) {
    out.push(`[${MARK[c.status]}] ${c.title}`);
    for (const d of c.detail ?? []) out.push(`       ${d}`);
    if (c.advice && (c.status === 'warn' || c.status === 'fail' || c.status === 'skip'))
      out.push(`       → ${c.advice}`);
  }
  const n = (s: DoctorCheck['status']) => report.checks.filter((c) => c.status === s).length;
  out.push(
    '',
    `${n('ok')} ok, ${n('warn')} warning(s), ${n('fail')} failure(s), ${n('skip')} skipped — exit ${report.exitCode}`,
  );
  return `${out.join('\n')}\n`;
}
