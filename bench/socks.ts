/**
 * The SOCKS benchmark (issue 4), run by `pnpm bench` (bench/run.ts → `benchSocks()`):
 *
 * - pooled SMTP through a real Dante proxy against the same route direct, on the same sink, in
 *   the same run (alternating runs, median of the paired ratios), small mails and 1 MB mails;
 * - lost greetings: N unpooled sends through Dante to a sink that greets the moment it accepts,
 *   with this package's tunnel (goal: none) and, for comparison, with the socket of
 *   `socks.createConnection` handed over as is (what nodemailer's own SOCKS path does).
 *
 * Needs `danted` (Debian `dante-server`) and root, like the package's tests. BENCH_QUICK=1 for a
 * short run.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { registerHooks } from 'node:module';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Transport } from '../packages/core/src/index.ts';
import type { BenchRow, BenchSection } from './core.ts';

// The route package imports `@mailvia/core`, whose package exports point at dist/. Point it at
// the sources bench/core.ts uses, so one copy of core runs and no build is needed.
const CORE = new URL('../packages/core/src/index.ts', import.meta.url).href;
const CORE_TESTING = new URL('../packages/core/src/testing/peers.ts', import.meta.url).href;
registerHooks({
  resolve(specifier, context, next) {
    if (specifier === '@mailvia/core') return next(CORE, context);
    if (specifier === '@mailvia/core/testing') return next(CORE_TESTING, context);
    return next(specifier, context);
  },
});

const QUICK = process.env.BENCH_QUICK === '1';
const HOST = '127.0.0.1';
const CONCURRENCY = 10;
const POOL_CONNECTIONS = 3;
const SMALL = { warmup: QUICK ? 100 : 200, perRun: QUICK ? 200 : 500, runs: QUICK ? 3 : 7 };
const LARGE = { warmup: QUICK ? 5 : 10, perRun: QUICK ? 10 : 20, runs: QUICK ? 3 : 5 };
const UNPOOLED = { sends: QUICK ? 300 : 1000, concurrency: 16 };
const NAIVE = { sends: QUICK ? 60 : 200, concurrency: 16, greetingTimeout: 500 };

/** A minimal SMTP sink in its own process: greets at once, PIPELINING, counts mails. */
const SINK = `
const net = require('node:net');
const END = Buffer.from('\\r\\n.\\r\\n');
const stats = { mails: 0, connections: 0 };
const server = net.createServer((socket) => {
  stats.connections++;
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.write('220 bench-sink ESMTP ready\\r\\n');
  let data = false;
  let carry = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    let input = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    carry = Buffer.alloc(0);
    let pos = 0;
    let out = '';
    while (pos < input.length) {
      if (data) {
        const end = input.indexOf(END, Math.max(0, pos - 2));
        if (end < 0) { carry = Buffer.from(input.subarray(Math.max(pos, input.length - 4))); break; }
        data = false; pos = end + 5; stats.mails++;
        out += '250 2.0.0 Ok: queued as ' + stats.mails + '\\r\\n';
        continue;
      }
      const eol = input.indexOf('\\r\\n', pos, 'latin1');
      if (eol < 0) { carry = Buffer.from(input.subarray(pos)); break; }
      const verb = input.toString('latin1', pos, Math.min(pos + 4, eol)).toUpperCase();
      pos = eol + 2;
      if (verb === 'EHLO') out += '250-bench-sink\\r\\n250-PIPELINING\\r\\n250-8BITMIME\\r\\n250 SIZE 104857600\\r\\n';
      else if (verb === 'HELO') out += '250 bench-sink\\r\\n';
      else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP') out += '250 2.0.0 Ok\\r\\n';
      else if (verb === 'DATA') { out += '354 go on\\r\\n'; data = true; }
      else if (verb === 'QUIT') { socket.end(out + '221 2.0.0 Bye\\r\\n'); return; }
      else out += '502 5.5.2 Not implemented\\r\\n';
    }
    if (out) socket.write(out);
  });
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', (m) => { if (m === 'stats') process.send({ stats }); });
process.on('disconnect', () => process.exit(0));
`;

interface Sink {
  port: number;
  stats(): Promise<{ mails: number; connections: number }>;
  close(): void;
}

async function startSink(): Promise<Sink> {
  const child = spawn(process.execPath, ['-e', SINK], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the sink exited with ${code}`)));
    child.once('message', (m: { port: number }) => resolve(m.port));
  });
  child.removeAllListeners('exit');
  return {
    port,
    stats: () =>
      new Promise((resolve) => {
        child.once('message', (m: { stats: { mails: number; connections: number } }) => resolve(m.stats));
        child.send('stats');
      }),
    close: () => child.kill(),
  };
}

const TEXT = 'Dear parent, the school trip leaves at 8:15 on Monday; please bring a packed lunch. '.repeat(20);
const ATTACHMENT = randomBytes(1024 * 1024);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const round = (x: number, digits = 2) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);

async function bounded<T>(n: number, concurrency: number, task: (i: number) => Promise<T>): Promise<number> {
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        await task(i).catch(() => {
          failed++;
        });
      }
    }),
  );
  return failed;
}

/** Exported for `pnpm bench`: returns one section of the results file. */
export async function benchSocks(): Promise<BenchSection> {
  const core = await import('../packages/core/src/index.ts');
  const socks = await import('../packages/transport-socks/src/index.ts');
  const { startDante } = await import('../packages/transport-socks/test/peers/dante.ts');
  // the `socks` package is a dependency of the route package, not of the workspace root
  const { SocksClient } = (await import(
    new URL('../packages/transport-socks/node_modules/socks/build/index.js', import.meta.url).href
  )) as {
    SocksClient: {
      createConnection(options: {
        command: 'connect';
        proxy: { host: string; port: number; type: 5 };
        destination: { host: string; port: number };
      }): Promise<{ socket: Socket }>;
    };
  };
  // the route package is typed against core's build; at run time it gets the sources (see above)
  const socksTransport = (options: Parameters<typeof socks.createSocksTransport>[0]) =>
    socks.createSocksTransport(options) as unknown as Transport;

  const sink = await startSink();
  const dante = await startDante();
  const proxy = `socks5h://${dante.host}:${dante.port}`;
  try {
    const mail = (size: 'small' | 'large', i: number) =>
      core.prepareMessage({
        from: 'Bench School <school@example.org>',
        to: 'parent@example.org',
        subject: `Bench mail ${i}`,
        text: TEXT,
        ...(size === 'large'
          ? { attachments: [{ filename: 'report.bin', content: ATTACHMENT, contentType: 'application/octet-stream' }] }
          : {}),
      });
    const contenders = {
      direct: core.smtp({ host: HOST, port: sink.port, maxConnections: POOL_CONNECTIONS }),
      'through Dante': socksTransport({
        host: HOST,
        port: sink.port,
        maxConnections: POOL_CONNECTIONS,
        proxy,
      }),
    };

    /** Alternating runs, msgs/s per run per contender, and the ratio of each pair of runs. */
    const throughput = async (size: 'small' | 'large', plan: { warmup: number; perRun: number; runs: number }) => {
      const rates: Record<string, number[]> = { direct: [], 'through Dante': [] };
      const ratios: number[] = [];
      let failures = 0;
      for (const t of Object.values(contenders))
        failures += await bounded(plan.warmup, CONCURRENCY, (i) => t.send(mail(size, i)));
      for (let run = 0; run < plan.runs; run++) {
        const order = run % 2 ? (['through Dante', 'direct'] as const) : (['direct', 'through Dante'] as const);
        const rate: Record<string, number> = {};
        for (const name of order) {
          const t0 = performance.now();
          failures += await bounded(plan.perRun, CONCURRENCY, (i) => contenders[name].send(mail(size, i)));
          rate[name] = plan.perRun / ((performance.now() - t0) / 1000);
          rates[name]!.push(round(rate[name]!, 1));
        }
        ratios.push(rate['through Dante']! / rate.direct!);
      }
      return { rates, ratios, failures };
    };

    const small = await throughput('small', SMALL);
    const large = await throughput('large', LARGE);
    await Promise.all(Object.values(contenders).map((t) => t.close?.()));

    // lost greetings: every send on its own connection, through the proxy, to a sink that greets at once
    const before = await sink.stats();
    const unpooled = socksTransport({ host: HOST, port: sink.port, pool: false, proxy });
    const t0 = performance.now();
    const lost = await bounded(UNPOOLED.sends, UNPOOLED.concurrency, (i) => unpooled.send(mail('small', i)));
    const unpooledSeconds = (performance.now() - t0) / 1000;
    const after = await sink.stats();

    const naive = core.smtp({
      host: HOST,
      port: sink.port,
      pool: false,
      greetingTimeout: NAIVE.greetingTimeout,
      connect: async ({ host, port }) =>
        (
          await SocksClient.createConnection({
            command: 'connect',
            proxy: { host: dante.host, port: dante.port, type: 5 },
            destination: { host, port },
          })
        ).socket,
    });
    const naiveLost = await bounded(NAIVE.sends, NAIVE.concurrency, (i) => naive.send(mail('small', i)));

    const smallRatio = median(small.ratios);
    const largeRatio = median(large.ratios);
    const rows: BenchRow[] = [
      {
        measure: 'Pooled small mails (~2 KB): through Dante / direct',
        value: round(smallRatio),
        unit: 'x',
        goal: '≥ 0.9x',
        pass: smallRatio >= 0.9 && small.failures === 0,
        note: `median of ${SMALL.runs} paired runs of ${SMALL.perRun} mails, ${CONCURRENCY} in flight, ${POOL_CONNECTIONS} connections; ratios ${small.ratios.map((r) => round(r)).join(', ')}; failures ${small.failures}`,
      },
      {
        measure: 'Pooled small mails direct',
        value: round(median(small.rates.direct!), 0),
        unit: 'msgs/s',
        note: `runs: ${small.rates.direct!.join(', ')}`,
      },
      {
        measure: 'Pooled small mails through Dante',
        value: round(median(small.rates['through Dante']!), 0),
        unit: 'msgs/s',
        note: `runs: ${small.rates['through Dante']!.join(', ')}`,
      },
      {
        measure: 'Pooled 1 MB mails: through Dante / direct',
        value: round(largeRatio),
        unit: 'x',
        note: `median of ${LARGE.runs} paired runs of ${LARGE.perRun} mails; ratios ${large.ratios.map((r) => round(r)).join(', ')}; direct ${median(large.rates.direct!).toFixed(1)} msgs/s, through Dante ${median(large.rates['through Dante']!).toFixed(1)} msgs/s; failures ${large.failures} (nodemailer through Dante was measured at 0.8x)`,
      },
      {
        measure: `Lost greetings: ${UNPOOLED.sends} unpooled sends through Dante to a sink that greets at once`,
        value: lost,
        unit: 'lost',
        goal: '0',
        pass: lost === 0 && after.mails - before.mails === UNPOOLED.sends,
        note: `${UNPOOLED.concurrency} in flight; the sink counted ${after.mails - before.mails} mails on ${after.connections - before.connections} connections; ${round(UNPOOLED.sends / unpooledSeconds, 0)} sends/s`,
      },
      {
        measure: `For comparison: socket of socks.createConnection handed over as is (nodemailer's SOCKS path), ${NAIVE.sends} unpooled sends`,
        value: naiveLost,
        unit: 'lost',
        note: `greetingTimeout ${NAIVE.greetingTimeout} ms; the greeting that came with the proxy's reply is re-emitted before the SMTP client listens (nodemailer #1760, #1684)`,
      },
    ];
    return {
      title: 'SOCKS5 proxy (Dante): pooled SMTP through the proxy vs direct, and lost greetings',
      description:
        "@mailvia/transport-socks's createSocksTransport (core's smtp() with socksConnect) through Dante 1.4 on loopback, against smtp() direct, on one minimal sink (own process) that greets at once.",
      rows,
      details: {
        small,
        large,
        unpooled: { sends: UNPOOLED.sends, lost, seconds: unpooledSeconds },
        naive: { sends: NAIVE.sends, lost: naiveLost },
      },
    };
  } finally {
    sink.close();
    await dante.stop();
  }
}
