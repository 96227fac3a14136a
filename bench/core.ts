/**
 * Core's benchmark (issue 2): mailvia's smtp route against raw nodemailer on the same loopback
 * sink, failover costs (refused, black-holed, resting first route) and 10,000 organisations.
 *
 * Run through `pnpm bench` (bench/run.ts). Every number is measured in the same run; ratios are
 * against raw nodemailer measured minutes apart at most, alternating, median of several runs.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { connect as netConnect, type Socket } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  composeMime,
  createMailer,
  failover,
  type Message,
  type PreparedMessage,
  prepareMessage,
  type Receipt,
  smtp,
  type Transport,
} from '../packages/core/src/index.ts';
import { refusedPort, startSilentListener } from '../packages/core/src/testing/peers.ts';

// ---------------------------------------------------------------------------------------------
// Result shapes (bench/run.ts renders these; optional bench modules may return them too)

/** One measured number. */
export interface BenchRow {
  /** What was measured, in words. */
  measure: string;
  /** The number (null when it could not be measured). */
  value: number | null;
  /** Unit of `value`: `msgs/s`, `ms`, `x`, `MB`, … */
  unit: string;
  /** The goal, in words (`≥ 1.5x`). */
  goal?: string;
  /** Whether the goal is met; absent when the row has no goal. */
  pass?: boolean;
  /** How it was measured, spread, caveats. */
  note?: string;
}

/** A table of the results file. */
export interface BenchSection {
  title: string;
  /** What the section measures and how, in a sentence or two. */
  description?: string;
  rows: BenchRow[];
  /** Raw samples and settings, kept in latest.json only. */
  details?: Record<string, unknown>;
  /** Set when the section failed to run. */
  error?: string;
}

// ---------------------------------------------------------------------------------------------
// Settings (BENCH_QUICK=1 for a fast smoke run while editing)

const QUICK = process.env.BENCH_QUICK === '1';
const HOST = '127.0.0.1';
const CONCURRENCY = 10;
const POOL_CONNECTIONS = 3; // smtp()'s default maxConnections; nodemailer "tuned alike" gets the same
const SMALL = { warmup: QUICK ? 100 : 300, perRun: QUICK ? 300 : 500, runs: QUICK ? 3 : 12 };
const LARGE = { warmup: QUICK ? 10 : 20, perRun: QUICK ? 20 : 30, runs: QUICK ? 3 : 9 };
const SMTP_SERVER_SINK = { warmup: 50, perRun: QUICK ? 100 : 300, runs: 3 };
const FAILOVER_SAMPLES = QUICK ? 100 : 300;
const RESTING_SAMPLES = QUICK ? 1000 : 3000;
const ORGANISATIONS = 10_000;

const requireFromCore = createRequire(new URL('../packages/core/package.json', import.meta.url));

interface NodemailerTransporter {
  sendMail(mail: Record<string, unknown>): Promise<{ accepted: unknown[]; rejected: unknown[] }>;
  close(): void;
}
interface NodemailerModule {
  createTransport(options: Record<string, unknown>): NodemailerTransporter;
}
const nodemailer = requireFromCore('nodemailer') as NodemailerModule;
const nodemailerVersion = (requireFromCore('nodemailer/package.json') as { version: string }).version;

// ---------------------------------------------------------------------------------------------
// Sinks: each runs in its own process, so the client under test has this process (and its CPU
// accounting) to itself.

interface SinkStats {
  mails: number;
  bytes: number;
  connections: number;
  open: number;
}

interface Sink {
  kind: string;
  port: number;
  stats(): Promise<SinkStats>;
  close(): Promise<void>;
}

/**
 * A minimal SMTP server on node:net: greets at once, answers EHLO with PIPELINING, 250 to
 * MAIL/RCPT/RSET/NOOP, takes DATA until the final dot and answers 250. It parses nothing, so
 * it costs the client's measurement as little as a server can.
 */
const FAST_SINK = `
const net = require('node:net');
const END = Buffer.from('\\r\\n.\\r\\n');
const EMPTY = Buffer.alloc(0);
const EHLO = '250-bench-sink\\r\\n250-PIPELINING\\r\\n250-8BITMIME\\r\\n250-SMTPUTF8\\r\\n250 SIZE 104857600\\r\\n';
const stats = { mails: 0, bytes: 0, connections: 0, open: 0 };
const server = net.createServer((socket) => {
  stats.connections++;
  stats.open++;
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.on('close', () => stats.open--);
  let data = false;
  let carry = EMPTY;
  socket.write('220 bench-sink ESMTP ready\\r\\n');
  socket.on('data', (chunk) => {
    stats.bytes += chunk.length;
    const input = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    carry = EMPTY;
    let pos = 0;
    let searchFrom = 0;
    let out = '';
    while (pos < input.length) {
      if (data) {
        const end = input.indexOf(END, searchFrom);
        if (end < 0) {
          carry = Buffer.from(input.subarray(Math.max(searchFrom, input.length - 4)));
          pos = input.length;
          break;
        }
        data = false;
        pos = end + 5;
        stats.mails++;
        out += '250 2.0.0 Ok: queued as ' + stats.mails + '\\r\\n';
        continue;
      }
      const eol = input.indexOf('\\r\\n', pos, 'latin1');
      if (eol < 0) {
        carry = Buffer.from(input.subarray(pos));
        break;
      }
      const verb = input.toString('latin1', pos, Math.min(pos + 4, eol)).toUpperCase();
      pos = eol + 2;
      if (verb === 'EHLO') out += EHLO;
      else if (verb === 'HELO') out += '250 bench-sink\\r\\n';
      else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP') out += '250 2.0.0 Ok\\r\\n';
      else if (verb === 'DATA') {
        out += '354 End data with <CR><LF>.<CR><LF>\\r\\n';
        data = true;
        searchFrom = pos - 2;
      } else if (verb === 'QUIT') {
        socket.end(out + '221 2.0.0 Bye\\r\\n');
        return;
      } else out += '502 5.5.2 Not implemented\\r\\n';
    }
    if (out) socket.write(out);
  });
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', (m) => {
  if (m === 'stats') process.send({ stats });
  if (m === 'close') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
`;

/** smtp-server (what the tests use), without mailparser: 100 ms before its greeting, then real parsing of SMTP. */
const SMTP_SERVER_SINK_CODE = `
const { SMTPServer } = require(process.env.BENCH_SMTP_SERVER);
const stats = { mails: 0, bytes: 0, connections: 0, open: 0 };
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  disableReverseLookup: true,
  logger: false,
  size: 100 * 1024 * 1024,
  onConnect(session, cb) { stats.connections++; stats.open++; cb(); },
  onClose() { stats.open--; },
  onData(stream, session, cb) {
    stream.on('data', (c) => { stats.bytes += c.length; });
    stream.on('end', () => { stats.mails++; cb(null, 'Ok: queued as ' + stats.mails); });
  },
});
server.on('error', () => {});
server.listen(0, '127.0.0.1', () => process.send({ port: server.server.address().port }));
process.on('message', (m) => {
  if (m === 'stats') process.send({ stats });
  if (m === 'close') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
`;

async function startSink(kind: 'fast' | 'smtp-server'): Promise<Sink> {
  const child = spawn(process.execPath, ['-e', kind === 'fast' ? FAST_SINK : SMTP_SERVER_SINK_CODE], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_SMTP_SERVER: requireFromCore.resolve('smtp-server') },
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the ${kind} sink exited with ${code}`)));
    child.once('message', (m: { port: number }) => resolve(m.port));
  });
  child.removeAllListeners('exit');
  return {
    kind,
    port,
    stats: () =>
      new Promise<SinkStats>((resolve) => {
        child.once('message', (m: { stats: SinkStats }) => resolve(m.stats));
        child.send('stats');
      }),
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send('close');
      const timer = setTimeout(() => child.kill(), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Mails

const TEXT = (() => {
  const line = 'Dear parent, the school trip leaves at 8:15 on Monday; please bring a packed lunch. ';
  return line.repeat(20).trim(); // ~1.7 KB: with headers the raw mail is about 2 KB
})();
const ATTACHMENT = randomBytes(1024 * 1024);

function mail(size: 'small' | 'large', i: number): Message {
  return {
    from: 'Bench School <school@example.org>',
    to: 'parent@example.org',
    subject: `Bench mail ${i}`,
    text: TEXT,
    ...(size === 'large'
      ? {
          attachments: [{ filename: 'report.bin', content: ATTACHMENT, contentType: 'application/octet-stream' }],
        }
      : {}),
  };
}

function nodemailerMail(size: 'small' | 'large', i: number): Record<string, unknown> {
  return { ...mail(size, i) };
}

// ---------------------------------------------------------------------------------------------
// Helpers

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const round = (x: number, digits = 2) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);

/** Sends `n` mails with at most `concurrency` in flight. */
async function bounded(n: number, concurrency: number, send: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await send(next++);
    }),
  );
}

interface Contender {
  name: string;
  send(size: 'small' | 'large', i: number): Promise<void>;
  close(): Promise<void>;
}

function mailviaContender(port: number): Contender {
  const route = smtp({ host: HOST, port });
  return {
    name: 'mailvia smtp() (pooled, defaults)',
    async send(size, i) {
      const r = await route.send(prepareMessage(mail(size, i)));
      if (r.accepted.length !== 1) throw new Error(`mailvia: not accepted: ${JSON.stringify(r)}`);
    },
    close: () => route.close!(),
  };
}

function nodemailerContender(port: number, tuned: boolean): Contender {
  const transporter = nodemailer.createTransport(
    tuned
      ? { host: HOST, port, pool: true, maxConnections: POOL_CONNECTIONS, maxMessages: Number.POSITIVE_INFINITY }
      : { host: HOST, port },
  );
  return {
    name: tuned
      ? `nodemailer tuned alike (pool, maxConnections ${POOL_CONNECTIONS}, maxMessages Infinity)`
      : 'nodemailer defaults (createTransport({host, port}): unpooled)',
    async send(size, i) {
      const info = await transporter.sendMail(nodemailerMail(size, i));
      if (info.accepted.length !== 1) throw new Error(`nodemailer: not accepted: ${JSON.stringify(info)}`);
    },
    async close() {
      transporter.close();
    },
  };
}

/**
 * The loopback ceiling: a minimal client that sends one pre-composed mail over and over on
 * `connections` connections, MAIL/RCPT/DATA pipelined in one write (RFC 2920), the body after
 * the 354. No MIME building per mail: it shows what the wire and the sink allow.
 */
async function pipeliningClient(port: number, raw: Buffer, n: number, connections: number): Promise<void> {
  const stuffed = Buffer.from(
    `${raw
      .toString('latin1')
      .replace(/^\./, '..')
      .replace(/\r\n\./g, '\r\n..')}${raw.toString('latin1').endsWith('\r\n') ? '' : '\r\n'}.\r\n`,
    'latin1',
  );
  const envelope = 'MAIL FROM:<school@example.org>\r\nRCPT TO:<parent@example.org>\r\nDATA\r\n';
  let remaining = n;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const socket: Socket = netConnect(port, HOST);
      socket.setNoDelay(true);
      let pending = '';
      // replies still expected before the next step: greeting, EHLO, then per mail 250 250 354 | 250
      let stage: 'greeting' | 'ehlo' | 'envelope' | 'body' = 'greeting';
      let finals = 0;
      let quitting = false;
      const next = () => {
        if (quitting) return;
        if (remaining <= 0) {
          quitting = true;
          socket.end('QUIT\r\n');
          return;
        }
        remaining--;
        stage = 'envelope';
        finals = 0;
        socket.write(envelope);
      };
      socket.on('error', reject);
      socket.on('close', () => resolve());
      socket.on('data', (chunk: Buffer) => {
        pending += chunk.toString('latin1');
        let eol = pending.indexOf('\r\n');
        while (eol >= 0) {
          const line = pending.slice(0, eol);
          pending = pending.slice(eol + 2);
          eol = pending.indexOf('\r\n');
          if (line[3] === '-') continue; // a continuation line
          const code = Number(line.slice(0, 3));
          if (code >= 400 && stage !== 'greeting') return reject(new Error(`ceiling client: ${line}`));
          if (stage === 'greeting') {
            stage = 'ehlo';
            socket.write('EHLO bench\r\n');
          } else if (stage === 'ehlo') next();
          else if (stage === 'envelope') {
            if (++finals === 3) {
              stage = 'body';
              socket.write(stuffed);
            }
          } else next();
        }
      });
    });
  await Promise.all(Array.from({ length: connections }, one));
}

interface ThroughputResult {
  rates: Record<string, number[]>;
  /** Client CPU (user + system) per mail, ms, per run. */
  cpu: Record<string, number[]>;
  medians: Record<string, number>;
  errors: Record<string, string>;
}

/** Alternating runs of every contender, `runs` times, after a warm-up; msgs/s per run. */
async function throughput(
  sink: Sink,
  contenders: Contender[],
  size: 'small' | 'large',
  plan: { warmup: number; perRun: number; runs: number },
): Promise<ThroughputResult> {
  const rates: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  const errors: Record<string, string> = {};
  for (const c of contenders) {
    rates[c.name] = [];
    cpu[c.name] = [];
    try {
      await bounded(plan.warmup, CONCURRENCY, (i) => c.send(size, i));
    } catch (e) {
      errors[c.name] = `warm-up: ${(e as Error).message}`;
    }
  }
  for (let run = 0; run < plan.runs; run++) {
    // rotate the order so no contender always runs first (or right after the slowest)
    const order = contenders.map((_, k) => contenders[(k + run) % contenders.length]!);
    for (const c of order) {
      if (errors[c.name]) continue;
      const before = (await sink.stats()).mails;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      try {
        await bounded(plan.perRun, CONCURRENCY, (i) => c.send(size, i));
      } catch (e) {
        errors[c.name] = (e as Error).message;
        continue;
      }
      const seconds = (performance.now() - t0) / 1000;
      const used = process.cpuUsage(cpu0);
      const got = (await sink.stats()).mails - before;
      if (got !== plan.perRun) {
        errors[c.name] = `the sink received ${got} mails of ${plan.perRun}`;
        continue;
      }
      rates[c.name]!.push(plan.perRun / seconds);
      cpu[c.name]!.push((used.user + used.system) / 1000 / plan.perRun);
    }
  }
  const medians: Record<string, number> = {};
  for (const [k, v] of Object.entries(rates)) medians[k] = median(v);
  return { rates, cpu, medians, errors };
}

/** Median of per-run ratios a/b (runs of a and b are adjacent in time, so drift cancels). */
function pairedRatio(a: number[], b: number[]): { median: number; min: number; max: number } {
  const rs = a.slice(0, Math.min(a.length, b.length)).map((x, i) => x / b[i]!);
  return { median: median(rs), min: Math.min(...rs), max: Math.max(...rs) };
}

function ratioRow(measure: string, a: number[], b: number[], goal: number | undefined, extra = ''): BenchRow {
  if (!a.length || !b.length) return { measure, value: null, unit: 'x', note: 'not measured (see errors)' };
  const r = pairedRatio(a, b);
  return {
    measure,
    value: round(r.median),
    unit: 'x',
    ...(goal !== undefined ? { goal: `≥ ${goal}x`, pass: r.median >= goal } : {}),
    note: `median of ${Math.min(a.length, b.length)} paired runs; range ${round(r.min)}–${round(r.max)}x; ratio of medians ${round(median(a) / median(b))}x${extra}`,
  };
}

function rateRow(measure: string, rates: number[], error: string | undefined, cpu?: number[]): BenchRow {
  if (!rates.length) return { measure, value: null, unit: 'msgs/s', note: `failed: ${error ?? 'no runs'}` };
  const cpuNote = cpu?.length ? `; client CPU ${round(median(cpu), 3)} ms per mail` : '';
  return {
    measure,
    value: round(median(rates), 0),
    unit: 'msgs/s',
    note: `median of ${rates.length} runs (${rates.map((r) => Math.round(r)).join(', ')})${cpuNote}${error ? `; error: ${error}` : ''}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Sections

async function throughputSection(sink: Sink, size: 'small' | 'large'): Promise<BenchSection> {
  const plan = size === 'small' ? SMALL : LARGE;
  const sample = await composeMime(prepareMessage(mail(size, 0)));
  const contenders = [
    mailviaContender(sink.port),
    nodemailerContender(sink.port, false),
    nodemailerContender(sink.port, true),
  ];
  const [ours, plain, tuned] = contenders.map((c) => c.name) as [string, string, string];
  const result = await throughput(sink, contenders, size, plan);
  await Promise.all(contenders.map((c) => c.close()));
  const rows: BenchRow[] = [
    rateRow(ours, result.rates[ours]!, result.errors[ours], result.cpu[ours]),
    rateRow(plain, result.rates[plain]!, result.errors[plain], result.cpu[plain]),
    rateRow(tuned, result.rates[tuned]!, result.errors[tuned], result.cpu[tuned]),
    ratioRow(
      'mailvia / nodemailer defaults',
      result.rates[ours]!,
      result.rates[plain]!,
      1.5,
      size === 'large'
        ? '. CPU-bound: base64 and the dot-stuffing scan of ~1.4 MB per mail dominate, so reusing connections saves little'
        : '',
    ),
    ratioRow('mailvia / nodemailer tuned alike', result.rates[ours]!, result.rates[tuned]!, 0.95),
  ];
  const details: Record<string, unknown> = { plan, concurrency: CONCURRENCY, rawBytes: sample.length, ...result };
  if (size === 'small') {
    // context: the loopback ceiling, with the same number of connections as the pools
    const ceiling: number[] = [];
    const n = plan.perRun * 2;
    await pipeliningClient(sink.port, sample, 200, POOL_CONNECTIONS);
    for (let run = 0; run < 3; run++) {
      const before = (await sink.stats()).mails;
      const t0 = performance.now();
      await pipeliningClient(sink.port, sample, n, POOL_CONNECTIONS);
      const seconds = (performance.now() - t0) / 1000;
      if ((await sink.stats()).mails - before === n) ceiling.push(n / seconds);
    }
    rows.push({
      ...rateRow(
        `context: minimal pipelining client, ${POOL_CONNECTIONS} connections, pre-composed mail (loopback ceiling)`,
        ceiling,
        undefined,
      ),
    });
    if (ceiling.length && result.rates[plain]!.length) {
      rows.push({
        measure: 'context: ceiling / nodemailer defaults',
        value: round(median(ceiling) / median(result.rates[plain]!), 1),
        unit: 'x',
        note: 'ratio of medians',
      });
    }
    details.ceiling = ceiling;
  }
  return {
    title:
      size === 'small'
        ? `Throughput, small mails (~${Math.round(sample.length / 100) / 10} KB), fast sink`
        : `Throughput, 1 MB attachment (${Math.round(sample.length / 1024)} KB raw), fast sink`,
    description:
      `${plan.perRun} mails per run, ${CONCURRENCY} in flight, ${plan.runs} alternating runs per contender after ` +
      `${plan.warmup} warm-up mails; every run checks the sink received exactly that many mails. Each send ` +
      `includes building the message (mailvia: prepareMessage + MIME; nodemailer: sendMail's MIME). Sink: a minimal ` +
      'node:net SMTP server in its own process that greets at once and parses nothing. CPU per mail: this ' +
      'process (the client) only, user + system.',
    rows,
    details,
  };
}

async function smtpServerSection(): Promise<BenchSection> {
  const sink = await startSink('smtp-server');
  try {
    const contenders = [
      mailviaContender(sink.port),
      nodemailerContender(sink.port, false),
      nodemailerContender(sink.port, true),
    ];
    const [ours, plain, tuned] = contenders.map((c) => c.name) as [string, string, string];
    const result = await throughput(sink, contenders, 'small', SMTP_SERVER_SINK);
    await Promise.all(contenders.map((c) => c.close()));
    return {
      title: 'Context: throughput, small mails, smtp-server sink',
      description:
        `The same contenders against smtp-server (the tests' server, without mailparser), ${SMTP_SERVER_SINK.perRun} ` +
        `mails per run, ${SMTP_SERVER_SINK.runs} runs. smtp-server waits 100 ms before its greeting, so every new ` +
        'connection costs 100 ms: this mostly measures connection reuse, not the client. The goals are judged on the fast sink.',
      rows: [
        rateRow(ours, result.rates[ours]!, result.errors[ours], result.cpu[ours]),
        rateRow(plain, result.rates[plain]!, result.errors[plain], result.cpu[plain]),
        rateRow(tuned, result.rates[tuned]!, result.errors[tuned], result.cpu[tuned]),
        ratioRow('mailvia / nodemailer defaults', result.rates[ours]!, result.rates[plain]!, undefined),
        ratioRow('mailvia / nodemailer tuned alike', result.rates[ours]!, result.rates[tuned]!, undefined),
      ],
      details: { plan: SMTP_SERVER_SINK, ...result },
    };
  } finally {
    await sink.close();
  }
}

async function timed(send: () => Promise<Receipt>): Promise<{ ms: number; receipt: Receipt }> {
  const t0 = performance.now();
  const receipt = await send();
  return { ms: performance.now() - t0, receipt };
}

/** A route that accepts at once without I/O: isolates what a composite adds around it. */
function instantRoute(): Transport {
  return {
    specificationVersion: 'v1',
    name: 'instant',
    async send(message: PreparedMessage) {
      return {
        route: 'instant',
        messageId: message.messageId,
        accepted: message.envelope.to,
        rejected: [],
        acceptedBy: 'provider',
        attempts: [{ route: 'instant', ok: true, startedAt: Date.now(), durationMs: 0 }],
      };
    },
  };
}

async function failoverSection(sink: Sink): Promise<BenchSection> {
  const rows: BenchRow[] = [];
  const details: Record<string, unknown> = {};
  const working = smtp({ host: HOST, port: sink.port, name: 'working' });
  const deadPort = await refusedPort();
  const refused = smtp({ host: HOST, port: deadPort, name: 'refused' });
  try {
    // warm the working route's pool and the JIT of every path measured
    for (let i = 0; i < 100; i++) {
      await working.send(prepareMessage(mail('small', i)));
      await failover([refused, working]).send(prepareMessage(mail('small', i)));
    }

    // 1. refused first route, every send (a fresh chain each time: nothing rests yet)
    const alone: number[] = [];
    const chained: number[] = [];
    for (let i = 0; i < FAILOVER_SAMPLES; i++) {
      const a = prepareMessage(mail('small', i));
      const b = prepareMessage(mail('small', i));
      const chain = failover([refused, working]);
      // alternate which goes first, so neither always follows the other
      if (i % 2) alone.push((await timed(() => working.send(a))).ms);
      const { ms, receipt } = await timed(() => chain.send(b));
      if (!(i % 2)) alone.push((await timed(() => working.send(a))).ms);
      const first = receipt.attempts[0];
      if (receipt.attempts.length !== 2 || first?.ok || first?.skipped || first?.kind !== 'unavailable')
        throw new Error(`refused chain: unexpected attempts ${JSON.stringify(receipt.attempts)}`);
      chained.push(ms);
    }
    const added = median(chained) - median(alone);
    rows.push({
      measure: 'working route alone, sequential send',
      value: round(median(alone), 3),
      unit: 'ms',
      note: `median of ${alone.length}; p90 ${round(quantile(alone, 0.9), 3)} ms`,
    });
    rows.push({
      measure: 'refused first route (closed port): added time per send',
      value: round(added, 3),
      unit: 'ms',
      goal: '< 5 ms',
      pass: added < 5,
      note: `chain median ${round(median(chained), 3)} ms (p90 ${round(quantile(chained, 0.9), 3)}) minus working alone; ${chained.length} sends, a fresh failover([refused, working]) each (no rest yet)`,
    });
    details.refused = { alone, chained };

    // 2. black-holed first route: a listener that accepts and never greets, default timeouts
    const silent = await startSilentListener();
    try {
      const holed = smtp({ host: HOST, port: silent.port, name: 'black-holed' });
      const { ms, receipt } = await timed(() => failover([holed, working]).send(prepareMessage(mail('small', 0))));
      const first = receipt.attempts[0];
      if (receipt.attempts.length !== 2 || first?.ok)
        throw new Error(`black-holed chain: unexpected attempts ${JSON.stringify(receipt.attempts)}`);
      rows.push({
        measure: 'black-holed first route (never greets), default timeouts: one send',
        value: round(ms, 0),
        unit: 'ms',
        goal: '< 2500 ms',
        pass: ms < 2500,
        note: `first attempt ${first?.kind}/${first?.phase} after ${first?.durationMs} ms (${first?.code ?? 'no code'}), then delivered by the working route`,
      });
      details.blackHoled = { ms, attempts: receipt.attempts };
      await holed.close?.();
    } finally {
      await silent.close();
    }

    // 3. resting first route: after one failure it is skipped without a network call
    const restingChain = failover([refused, working]);
    await restingChain.send(prepareMessage(mail('small', 0)));
    const instant = instantRoute();
    const restingInstant = failover([refused, instant]);
    await restingInstant.send(prepareMessage(mail('small', 0)));
    const smtpAlone: number[] = [];
    const smtpResting: number[] = [];
    const instantAlone: number[] = [];
    const instantResting: number[] = [];
    for (let i = 0; i < RESTING_SAMPLES; i++) {
      const msgs = [0, 1, 2, 3].map(() => prepareMessage(mail('small', i)));
      // compose outside the timing for the SMTP pair: both sides would pay it equally
      await Promise.all(msgs.map((m) => composeMime(m)));
      if (i % 2) {
        smtpAlone.push((await timed(() => working.send(msgs[0]!))).ms);
        const r = await timed(() => restingChain.send(msgs[1]!));
        if (r.receipt.attempts[0]?.skipped !== 'resting') throw new Error('the refused route did not rest');
        smtpResting.push(r.ms);
      } else {
        const r = await timed(() => restingChain.send(msgs[1]!));
        if (r.receipt.attempts[0]?.skipped !== 'resting') throw new Error('the refused route did not rest');
        smtpResting.push(r.ms);
        smtpAlone.push((await timed(() => working.send(msgs[0]!))).ms);
      }
      instantAlone.push((await timed(() => instant.send(msgs[2]!))).ms);
      instantResting.push((await timed(() => restingInstant.send(msgs[3]!))).ms);
    }
    const restSmtp = median(smtpResting) - median(smtpAlone);
    const restInstant = median(instantResting) - median(instantAlone);
    rows.push({
      measure: 'resting first route: added time per send (working route: instant, in-process)',
      value: round(restInstant, 4),
      unit: 'ms',
      goal: '< 0.1 ms',
      pass: restInstant < 0.1,
      note: `median ${round(median(instantResting) * 1000, 1)} µs through failover([resting, instant]) minus ${round(median(instantAlone) * 1000, 1)} µs for the instant route alone; ${RESTING_SAMPLES} sends each. Isolates the skip from network noise`,
    });
    rows.push({
      measure: 'resting first route: added time per send (working route: smtp to the sink)',
      value: round(restSmtp, 4),
      unit: 'ms',
      goal: '< 0.1 ms',
      pass: restSmtp < 0.1,
      note: `chain median ${round(median(smtpResting), 3)} ms minus working alone ${round(median(smtpAlone), 3)} ms; ${RESTING_SAMPLES} interleaved sequential sends each, MIME built before timing`,
    });
    details.resting = { smtpAlone, smtpResting, instantAlone, instantResting };
  } finally {
    await working.close?.();
    await refused.close?.();
  }
  return {
    title: 'Failover: a first route that is refused, black-holed or resting',
    description:
      'Sequential sends (one at a time) of small mails through failover([first, working]) against the working ' +
      'route alone, on the fast sink. Added time = difference of medians. The refused route is a closed loopback ' +
      'port; the black-holed one a listener that accepts and never greets.',
    rows,
    details: {
      samples: { refused: FAILOVER_SAMPLES, resting: RESTING_SAMPLES },
      // keep latest.json readable: summaries rather than thousands of samples
      ...Object.fromEntries(
        Object.entries(details).map(([k, v]) => [
          k,
          Object.fromEntries(
            Object.entries(v as Record<string, unknown>).map(([kk, vv]) =>
              Array.isArray(vv) && typeof vv[0] === 'number'
                ? [
                    kk,
                    {
                      median: median(vv as number[]),
                      p10: quantile(vv as number[], 0.1),
                      p90: quantile(vv as number[], 0.9),
                    },
                  ]
                : [kk, vv],
            ),
          ),
        ]),
      ),
    },
  };
}

type OrganisationsMode = 'mailvia' | 'nodemailer';

interface OrganisationsResult {
  mode: OrganisationsMode;
  organisations: number;
  resolverCalls: number;
  totalMs: number;
  cachedAtEnd: number | null;
  gcExposed: boolean;
  baseline: NodeJS.MemoryUsage;
  after: NodeJS.MemoryUsage;
  peakRss: number;
  peakHeapPlusExternal: number;
}

/**
 * In a child process (`--expose-gc`): 10,000 organisations, each sent one mail. `mailvia`: one
 * mailer resolving every organisation to its own smtp:// chain, cache at its defaults.
 * `nodemailer` (for comparison): a transporter with nodemailer's defaults per organisation,
 * closed after its mail, i.e. what an application without a bounded cache would do at best.
 */
async function organisationsChild(mode: OrganisationsMode, port: number): Promise<OrganisationsResult> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const collect = async () => {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await new Promise((r) => setImmediate(r));
    }
  };
  let resolverCalls = 0;
  let send: (org: string, i: number) => Promise<void>;
  let cached = (): number | null => null;
  let close = async () => {};
  let forget = async (_org: string) => {};
  if (mode === 'mailvia') {
    const mailer = createMailer({
      organisations: () => {
        resolverCalls++;
        return [`smtp://${HOST}:${port}`];
      },
      cache: {}, // the defaults
    });
    send = async (org, i) => {
      const r = await mailer.send(mail('small', i), { organisation: org });
      if (r.accepted.length !== 1) throw new Error(`${org}: not accepted`);
    };
    cached = () => mailer.cachedOrganisations;
    close = () => mailer.close();
    forget = (org) => mailer.invalidate(org);
  } else {
    send = async (org, i) => {
      resolverCalls++;
      const transporter = nodemailer.createTransport({ host: HOST, port });
      const info = await transporter.sendMail(nodemailerMail('small', i));
      transporter.close();
      if (info.accepted.length !== 1) throw new Error(`${org}: not accepted`);
    };
  }
  // warm-up: load every lazily loaded module and JIT the path, then forget these organisations
  await bounded(50, CONCURRENCY, (i) => send(`warm-${i}`, i));
  for (let i = 0; i < 50; i++) await forget(`warm-${i}`);
  resolverCalls = 0;
  await new Promise((r) => setTimeout(r, 200));
  await collect();
  const baseline = process.memoryUsage();
  let peakRss = baseline.rss;
  let peakHeapPlusExternal = baseline.heapUsed + baseline.external;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeapPlusExternal = Math.max(peakHeapPlusExternal, m.heapUsed + m.external);
  }, 20);
  const t0 = performance.now();
  await bounded(ORGANISATIONS, CONCURRENCY, (i) => send(`org-${i}`, i));
  const totalMs = performance.now() - t0;
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 200)); // let evicted chains finish their QUIT
  await collect();
  const after = process.memoryUsage();
  const cachedAtEnd = cached();
  await close();
  return {
    mode,
    organisations: ORGANISATIONS,
    resolverCalls,
    totalMs,
    cachedAtEnd,
    gcExposed: gc !== undefined,
    baseline,
    after,
    peakRss,
    peakHeapPlusExternal,
  };
}

function organisationsRun(mode: OrganisationsMode, port: number): Promise<OrganisationsResult> {
  const self = fileURLToPath(import.meta.url);
  return new Promise<OrganisationsResult>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [...process.execArgv, '--expose-gc', self, '--organisations', mode, String(port)],
      { stdio: ['ignore', 'pipe', 'inherit'], env: process.env },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`the ${mode} child exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1)!) as OrganisationsResult);
      } catch (e) {
        reject(e);
      }
    });
  });
}

async function organisationsSection(sink: Sink): Promise<BenchSection> {
  const MB = 1024 * 1024;
  const s0 = await sink.stats();
  const ours = await organisationsRun('mailvia', sink.port);
  const s1 = await sink.stats();
  const raw = await organisationsRun('nodemailer', sink.port);
  const s2 = await sink.stats();
  const retained = (r: OrganisationsResult) =>
    (r.after.heapUsed + r.after.external - (r.baseline.heapUsed + r.baseline.external)) / MB;
  const rss = (r: OrganisationsResult) => (r.after.rss - r.baseline.rss) / MB;
  const peakRss = (r: OrganisationsResult) => (r.peakRss - r.baseline.rss) / MB;
  const peakHeap = (r: OrganisationsResult) =>
    (r.peakHeapPlusExternal - (r.baseline.heapUsed + r.baseline.external)) / MB;
  const received = s1.mails - s0.mails;
  if (received !== ORGANISATIONS + 50) throw new Error(`the sink received ${received} mails from the mailer child`);
  return {
    title: `${ORGANISATIONS.toLocaleString('en')} organisations resolved and sent to`,
    description:
      'In a child process started with --expose-gc: createMailer({ organisations: id => [`smtp://127.0.0.1:PORT`], ' +
      `cache: defaults }), then one small mail to each of ${ORGANISATIONS.toLocaleString('en')} distinct organisations, ${CONCURRENCY} in flight ` +
      '(each resolved, its chain built, its connection opened; the least recently used chains beyond the cache bound ' +
      'are closed). Baseline: after a warm-up of 50 other organisations (then invalidated) and a full GC. "Retained": ' +
      'the mailer still open, after a full GC. For comparison, raw nodemailer in another child: a transporter with its ' +
      'defaults per organisation, closed after its mail.',
    rows: [
      {
        measure: 'mailvia: total time',
        value: round(ours.totalMs / 1000, 2),
        unit: 's',
        note: `${Math.round(ORGANISATIONS / (ours.totalMs / 1000))} organisations/s; resolver called ${ours.resolverCalls} times; the sink received ${received} mails (warm-up included) on ${s1.connections - s0.connections} connections`,
      },
      {
        measure: 'mailvia: memory retained above baseline (heapUsed + external, after GC)',
        value: round(retained(ours), 1),
        unit: 'MB',
        goal: '< 50 MB',
        pass: ours.gcExposed && retained(ours) < 50,
        note: `${ours.cachedAtEnd} chains cached at the end, with their idle connections (default maxOrganisations); GC exposed: ${ours.gcExposed}`,
      },
      {
        measure: 'mailvia: peak heapUsed + external above baseline during the run',
        value: round(peakHeap(ours), 1),
        unit: 'MB',
        note: `sampled every 20 ms; garbage a full GC frees (see the retained row); raw nodemailer alike: ${round(peakHeap(raw), 1)} MB`,
      },
      {
        measure: 'mailvia: RSS above baseline (after the run and a full GC)',
        value: round(rss(ours), 1),
        unit: 'MB',
        note: `peak ${round(peakRss(ours), 1)} MB; V8 keeps the heap pages it grew to during the run (heapTotal ${round(ours.after.heapTotal / MB, 0)} MB after, ${round(ours.baseline.heapTotal / MB, 0)} MB at baseline). Raw nodemailer alike: ${round(rss(raw), 1)} MB (peak ${round(peakRss(raw), 1)} MB)`,
      },
      {
        measure: 'context: raw nodemailer, a transporter per organisation: total time',
        value: round(raw.totalMs / 1000, 2),
        unit: 's',
        note: `${Math.round(ORGANISATIONS / (raw.totalMs / 1000))} organisations/s; retained after GC ${round(retained(raw), 1)} MB; the sink received ${s2.mails - s1.mails} mails`,
      },
    ],
    details: { mailvia: ours, nodemailer: raw },
  };
}

// ---------------------------------------------------------------------------------------------

async function section(title: string, run: () => Promise<BenchSection>): Promise<BenchSection> {
  const t0 = performance.now();
  process.stderr.write(`[bench] ${title}…\n`);
  try {
    const s = await run();
    process.stderr.write(`[bench] ${title}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return s;
  } catch (e) {
    process.stderr.write(`[bench] ${title} FAILED: ${(e as Error).stack}\n`);
    return { title, rows: [], error: (e as Error).stack ?? String(e) };
  }
}

/** Runs core's benchmark; returns one section per table. */
export async function benchCore(): Promise<BenchSection[]> {
  const sink = await startSink('fast');
  // BENCH_ONLY=small,large,smtp-server,failover,organisations runs a subset (while working on one)
  const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
  const plan: [string, string, () => Promise<BenchSection>][] = [
    ['small', 'Throughput, small mails', () => throughputSection(sink, 'small')],
    ['large', 'Throughput, 1 MB attachment', () => throughputSection(sink, 'large')],
    ['smtp-server', 'Throughput on smtp-server', () => smtpServerSection()],
    ['failover', 'Failover', () => failoverSection(sink)],
    ['organisations', '10,000 organisations', () => organisationsSection(sink)],
  ];
  try {
    const out: BenchSection[] = [];
    for (const [key, title, run] of plan) if (!only || only.includes(key)) out.push(await section(title, run));
    return out;
  } finally {
    await sink.close();
  }
}

/** Versions of what was measured. */
export const benchVersions = { nodemailer: nodemailerVersion };

// child mode: `node --import tsx bench/core.ts --organisations PORT`
if (process.argv[1] && resolvePath(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--organisations');
  if (at > 0) {
    organisationsChild(process.argv[at + 1] as OrganisationsMode, Number(process.argv[at + 2]))
      .then((r) => {
        process.stdout.write(`${JSON.stringify(r)}\n`);
        process.exit(0);
      })
      .catch((e: unknown) => {
        process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
        process.exit(1);
      });
  }
}
