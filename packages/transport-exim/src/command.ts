import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { sha512Crypt } from './crypt.js';
import { formatDoctorReport, runDoctor } from './doctor.js';
import { generateRelay, type RelayTarget } from './generate.js';
import { installRelay, RelayValidationError } from './install.js';
import { loadOrganisations, OrganisationsError } from './organisations.js';
import { relayStatus } from './status.js';

/** Where the CLI writes. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** Reads all of stdin (hash-password). */
  stdin?(): Promise<string>;
}

/** Exit codes of `mailvia-exim`. */
export const EXIT = {
  ok: 0,
  /** doctor: warnings only; status: still queued or deferred. */
  warn: 1,
  /** doctor: a check failed; generate: Exim refused the configuration; status: failed. */
  fail: 2,
  /** bad arguments, unreadable input, Exim not found: nothing was checked or written. */
  usage: 3,
  /** status: the relay has no such message in its log or queue. */
  unknown: 4,
} as const;

export const USAGE = `mailvia-exim — the local Exim relay of @mailvia/transport-exim

Usage:
  mailvia-exim generate --orgs FILE [--out DIR] [--target standalone|debian|cpanel] [options]
  mailvia-exim doctor   [--config FILE] [--orgs FILE] [options]
  mailvia-exim status   (--message-id ID | --queue-id ID) [--config FILE] [options]
  mailvia-exim hash-password            (reads a relay password on stdin, prints its $6$ hash)

generate: writes the relay configuration and credentials files, checked with exim -bV first.
  --orgs FILE             organisations (.json, .yaml, or a module exporting "organisations")
  --out DIR               where the configuration goes (default: the current directory)
  --target T              standalone (default), debian (conf.d fragments), cpanel (exim.conf.local sections)
  --data-dir DIR          credentials directory as Exim sees it (default /etc/mailvia-exim; debian /etc/exim4/mailvia)
  --listen ADDR:PORT      standalone: loopback address and port (default 127.0.0.1:587)
  --exim-user USER        owner of the credentials files (default Debian-exim; cpanel mailnull)
  --spool-dir, --log-dir, --pid-file, --hostname   standalone daemon paths and name
  --upstream-ca FILE      CA bundle for the upstreams' certificates (default: the system's)
  --allow-loopback-upstream   allow an upstream on 127.0.0.1 (tests, local TLS tunnels)
  --exim BIN              Exim binary used to check the configuration
  --no-validate           write without exim -bV (not recommended)
  --dry-run               print the configuration (never the credentials) and write nothing

doctor: checks the relay; sends no mail.
  --config FILE           the relay's Exim configuration (-C); default: Exim's own
  --orgs FILE             test AUTH, senders and upstreams of these organisations
  --host H, --port N      the relay's address (default: from the configuration)
  --log FILE              the relay's main log (default: from log_file_path)
  --data-dir DIR          credentials directory (default: from the configuration)
  --since HOURS           how much of the log to read (default 24)
  --upstream-auth         also log in to each upstream with the organisation's account
  --upstream-ca FILE      CA for the upstreams' certificates (default: the system's)
  --allow-loopback-upstream   accept organisations whose upstream is on loopback
  --exim BIN, --json

status: what the relay did with one message (delivered, deferred and why, failed).
  --message-id ID, --queue-id ID, --config FILE, --exim BIN, --log FILE, --json

Exit codes: 0 ok; 1 doctor warnings / status still queued or deferred; 2 doctor failure,
generate refused by Exim, status failed; 3 bad arguments or missing input; 4 status: unknown message.
`;

function fail(io: CliIo, message: string): number {
  io.err(`mailvia-exim: ${message}\n`);
  return EXIT.usage;
}

/** Runs the CLI with arguments (without `node` and the script). Returns the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'generate':
        return await generate(rest, io);
      case 'doctor':
        return await doctor(rest, io);
      case 'status':
        return await status(rest, io);
      case 'hash-password':
        return await hashPassword(io);
      case undefined:
        io.err(USAGE);
        return EXIT.usage;
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return EXIT.ok;
      default:
        return fail(io, `unknown command "${command}"\n\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof OrganisationsError) return fail(io, e.message);
    if (e instanceof RelayValidationError) {
      io.err(`mailvia-exim: ${e.message}\n`);
      return EXIT.fail;
    }
    const code = (e as { code?: string }).code;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      return fail(io, `${(e as Error).message}\n\n${USAGE}`);
    }
    return fail(io, (e as Error).message);
  }
}

async function generate(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      orgs: { type: 'string' },
      out: { type: 'string' },
      target: { type: 'string' },
      'data-dir': { type: 'string' },
      listen: { type: 'string' },
      'exim-user': { type: 'string' },
      'spool-dir': { type: 'string' },
      'log-dir': { type: 'string' },
      'pid-file': { type: 'string' },
      hostname: { type: 'string' },
      'upstream-ca': { type: 'string' },
      'allow-loopback-upstream': { type: 'boolean' },
      exim: { type: 'string' },
      'no-validate': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  if (!values.orgs) return fail(io, 'generate needs --orgs FILE');
  const target = (values.target ?? 'standalone') as RelayTarget;
  if (!['standalone', 'debian', 'cpanel'].includes(target))
    return fail(io, `--target must be standalone, debian or cpanel`);
  let listenAddress: string | undefined;
  let port: number | undefined;
  if (values.listen) {
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(values.listen);
    if (!m) return fail(io, '--listen must be ADDRESS:PORT, e.g. 127.0.0.1:587');
    listenAddress = m[1]!.replace(/^\[|\]$/g, '');
    port = Number(m[2]);
  }
  const allowLoopbackUpstream = values['allow-loopback-upstream'] ?? false;
  const orgs = await loadOrganisations(values.orgs, { allowLoopbackUpstream });
  const abs = (p: string | undefined) => (p === undefined ? undefined : isAbsolute(p) ? p : resolve(p));
  const relay = generateRelay(orgs, {
    target,
    allowLoopbackUpstream,
    ...(values['data-dir'] ? { dataDir: abs(values['data-dir'])! } : {}),
    ...(listenAddress ? { listenAddress } : {}),
    ...(port ? { port } : {}),
    ...(values['exim-user'] ? { eximUser: values['exim-user'] } : {}),
    ...(values['spool-dir'] ? { spoolDirectory: abs(values['spool-dir'])! } : {}),
    ...(values['log-dir'] ? { logDirectory: abs(values['log-dir'])! } : {}),
    ...(values['pid-file'] ? { pidFile: abs(values['pid-file'])! } : {}),
    ...(values.hostname ? { primaryHostname: values.hostname } : {}),
    ...(values['upstream-ca'] ? { upstreamCaFile: abs(values['upstream-ca'])! } : {}),
  });
  if (values['dry-run']) {
    for (const f of relay.files) {
      io.out(`=== ${f.path} (mode 0${f.mode.toString(8)}${f.secret ? ', secret: not shown' : ''})\n`);
      if (!f.secret) io.out(`${f.content}\n`);
    }
    io.out(`=== instructions\n${relay.instructions}`);
    return EXIT.ok;
  }
  const report = await installRelay(relay, {
    outDir: abs(values.out ?? '.')!,
    validate: !values['no-validate'],
    ...(values.exim ? { eximBin: values.exim } : {}),
  });
  if (values.json) {
    io.out(`${JSON.stringify({ target, ...report }, null, 2)}\n`);
    return EXIT.ok;
  }
  io.out(`Wrote the ${target} relay for ${orgs.length} organisation(s): ${orgs.map((o) => o.id).join(', ')}\n`);
  for (const f of report.files) {
    io.out(`  ${f.path}  (mode ${f.mode}${f.owner !== 'unchanged' ? `, owner ${f.owner}` : ''})  ${f.description}\n`);
  }
  io.out(`Checked: ${report.validation}\n`);
  for (const n of report.notes) io.out(`Note: ${n}\n`);
  io.out(`\n${relay.instructions}`);
  return EXIT.ok;
}

async function doctor(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      exim: { type: 'string' },
      orgs: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      log: { type: 'string' },
      'data-dir': { type: 'string' },
      since: { type: 'string' },
      'upstream-auth': { type: 'boolean' },
      'upstream-ca': { type: 'string' },
      'allow-loopback-upstream': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    return fail(io, '--port must be a TCP port');
  const since = values.since === undefined ? undefined : Number(values.since);
  if (since !== undefined && !(since > 0)) return fail(io, '--since must be a number of hours');
  const organisations = values.orgs
    ? await loadOrganisations(values.orgs, { allowLoopbackUpstream: values['allow-loopback-upstream'] ?? false })
    : undefined;
  const upstreamCa = values['upstream-ca'] ? await readFile(values['upstream-ca'], 'utf8') : undefined;
  const report = await runDoctor({
    ...(values.config ? { config: values.config } : {}),
    ...(values.exim ? { eximBin: values.exim } : {}),
    ...(organisations ? { organisations } : {}),
    ...(values.host ? { host: values.host } : {}),
    ...(port ? { port } : {}),
    ...(values.log ? { logFile: values.log } : {}),
    ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}),
    ...(since ? { sinceHours: since } : {}),
    ...(values['upstream-auth'] ? { upstreamAuth: true } : {}),
    ...(upstreamCa ? { upstreamCa } : {}),
  });
  io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctorReport(report));
  return report.exitCode;
}

async function status(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      'message-id': { type: 'string' },
      'queue-id': { type: 'string' },
      config: { type: 'string' },
      exim: { type: 'string' },
      log: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  if (!values['message-id'] && !values['queue-id']) return fail(io, 'status needs --message-id or --queue-id');
  const s = await relayStatus({
    ...(values['message-id'] ? { messageId: values['message-id'] } : {}),
    ...(values['queue-id'] ? { queueId: values['queue-id'] } : {}),
    ...(values.config ? { config: values.config } : {}),
    ...(values.exim ? { eximBin: values.exim } : {}),
    ...(values.log ? { logFile: values.log } : {}),
  });
  if (values.json) io.out(`${JSON.stringify(s, null, 2)}\n`);
  else {
    io.out(
      `${s.queueId ?? '(no queue id)'} ${s.messageId ?? ''}: ${s.state}${s.inQueue ? ' (in the queue)' : ''}${s.frozen ? ' FROZEN' : ''}\n`,
    );
    for (const r of s.recipients) {
      io.out(`  ${r.address}: ${r.state}${r.host ? ` via ${r.host}` : ''}${r.response ? ` — ${r.response}` : ''}\n`);
      if (r.diagnosis) io.out(`    ${r.diagnosis.title}\n    → ${r.diagnosis.advice}\n`);
    }
  }
  if (s.state === 'delivered') return EXIT.ok;
  if (s.state === 'queued' || s.state === 'deferred') return EXIT.warn;
  if (s.state === 'unknown') return EXIT.unknown;
  return EXIT.fail;
}

async function hashPassword(io: CliIo): Promise<number> {
  const input = (await (io.stdin?.() ?? Promise.resolve(''))).replace(/\r?\n$/, '');
  if (input.length < 12) return fail(io, 'give the relay password (at least 12 characters) on stdin');
  io.out(`${sha512Crypt(input)}\n`);
  return EXIT.ok;
}
