/**
 * The relay generator, installer, organisations file and CLI, checked by the real tools: Exim's own
 * `-bV`/`-be`/`-bP`, Debian's update-exim4.conf, and openssl for the password hashes.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RouteConfigError } from '@mailvia/core';
import { refusedPort } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/command.js';
import { sha512Crypt } from '../src/crypt.js';
import { runDoctor } from '../src/doctor.js';
import { generateRelay } from '../src/generate.js';
import { installRelay, RelayValidationError } from '../src/install.js';
import { OrganisationsError, type RelayOrganisation, validateOrganisations } from '../src/organisations.js';
import { eximRoute } from '../src/transport.js';
import { requireTools } from './relay-harness.js';

const RELAY_PASS = 'fake-relay-password-aaaa';
const UP_PASS = 'fake-app-password-aaaa';
const input = () => [
  {
    id: 'school-a',
    relay: { password: RELAY_PASS },
    senders: ['office@school-a.example', '@news.school-a.example'],
    upstream: { host: 'smtp.gmail.com', port: 587, user: 'office@school-a.example', password: UP_PASS },
  },
  {
    id: 'school-b',
    relay: { user: 'relay-b@host.example', passwordHash: sha512Crypt('fake-relay-password-bbbb') },
    senders: ['office@school-b.example'],
    upstream: { host: 'smtp.office365.com', user: 'office@school-b.example', password: { env: 'SCHOOL_B_UP' } },
  },
];
const env = { SCHOOL_B_UP: 'fake-app-password-bbbb' };
const SECRETS = [RELAY_PASS, UP_PASS, 'fake-relay-password-bbbb', 'fake-app-password-bbbb'];

let tools: ReturnType<typeof requireTools>;
let orgs: RelayOrganisation[];
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'mailvia-exim-gen-'));
  chmodSync(d, 0o755); // as /etc is: Exim reads the files below it after giving up root
  dirs.push(d);
  return d;
};
const eximBe = (expr: string) =>
  execFileSync(tools.exim, ['-be', expr], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

beforeAll(async () => {
  tools = requireTools();
  orgs = await validateOrganisations(input(), { env });
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('organisations file', () => {
  const bad = async (mutate: (x: ReturnType<typeof input>) => void, options = {}) => {
    const x = input();
    mutate(x);
    return validateOrganisations(x, { env, ...options }).then(
      () => undefined,
      (e: unknown) => e as OrganisationsError,
    );
  };

  it('names the faulty field and never echoes a secret', async () => {
    const cases: [string, (x: ReturnType<typeof input>) => void][] = [
      ['organisations[0].relay.password', (x) => (x[0]!.relay.password = 'short')],
      ['organisations[1].id', (x) => (x[1]!.id = 'school-a')],
      ['organisations[1].relay.user', (x) => (x[1]!.relay.user = 'SCHOOL-A')],
      ['organisations[1].senders', (x) => (x[1]!.senders = ['OFFICE@school-a.example'])],
      ['senders', (x) => (x[1]!.senders = ['someone@news.school-a.example'])],
      ['organisations[0].senders[0]', (x) => (x[0]!.senders = ['!office@school-a.example'])],
      ['organisations[0].upstream.host', (x) => (x[0]!.upstream.host = '127.0.0.1')],
      ['organisations[0].upstream.port', (x) => (x[0]!.upstream.port = 25)],
      ['organisations[0].upstream.password', (x) => (x[0]!.upstream.password = 'line\nbreak')],
      ['organisations[1].upstream.password', (x) => (x[1]!.upstream.password = { env: 'MISSING_VAR' })],
    ];
    for (const [field, mutate] of cases) {
      const e = await bad(mutate);
      expect(e, field).toBeInstanceOf(OrganisationsError);
      expect(e!.field).toBe(field);
      for (const s of SECRETS) expect(e!.message).not.toContain(s);
    }
  });

  it('reads YAML, resolves { env } secrets and normalises senders', async () => {
    const dir = tmp();
    const file = join(dir, 'orgs.yaml');
    writeFileSync(
      file,
      `organisations:
  - id: school-c
    relay: { password: fake-relay-password-cccc }
    senders: [Office@School-C.example, "@School-C.example"]
    upstream: { host: smtp.gmail.com, user: c@school-c.example, password: { env: C_PASS } }
`,
    );
    const { loadOrganisations } = await import('../src/organisations.js');
    const [c] = await loadOrganisations(file, { env: { C_PASS: 'fake-app-password-cccc' } });
    expect(c).toMatchObject({
      id: 'school-c',
      relay: { user: 'school-c' },
      senders: ['office@school-c.example', '*@school-c.example'],
      upstream: { host: 'smtp.gmail.com', port: 587, password: 'fake-app-password-cccc' },
    });
  });
});

describe('relay passwords are stored hashed, and Exim checks the hashes', () => {
  it('sha512Crypt matches openssl passwd -6, and Exim crypteq accepts it (and only the right password)', () => {
    for (const [pw, salt] of [
      [RELAY_PASS, 'abcdefgh12345678'],
      ['pä^:ss w"rd $x {y}', 'Zz./09'],
      ['x'.repeat(80), 'saltsalt'],
    ] as const) {
      const hash = sha512Crypt(pw, salt);
      const ref = execFileSync('openssl', ['passwd', '-6', '-salt', salt, '-stdin'], { input: pw }).toString().trim();
      expect(hash).toBe(ref);
    }
    const hash = sha512Crypt(RELAY_PASS);
    expect(eximBe(`\${if crypteq{${RELAY_PASS}}{\\N${hash}\\N}{yes}{no}}`)).toBe('yes');
    expect(eximBe(`\${if crypteq{fake-relay-password-aaab}{\\N${hash}\\N}{yes}{no}}`)).toBe('no');
  });
});

describe('standalone relay: generated, checked by exim -bV, installed safely', () => {
  let dir: string;
  beforeAll(async () => {
    dir = tmp();
    const relay = generateRelay(orgs, {
      dataDir: join(dir, 'data'),
      spoolDirectory: join(dir, 'spool'),
      logDirectory: join(dir, 'log'),
      pidFile: join(dir, 'run/exim.pid'),
    });
    const report = await installRelay(relay, { outDir: dir, eximBin: tools.exim });
    expect(report.validation).toMatch(/exim -bV .* ok/);
    for (const s of SECRETS) expect(JSON.stringify(report)).not.toContain(s);
  });

  it('the credentials files are 0600 and owned by the Exim user; the configuration holds no secret', () => {
    const eximUid = Number(execFileSync('id', ['-u', 'Debian-exim'], { encoding: 'utf8' }));
    for (const f of ['relay-users', 'relay-ids', 'senders', 'upstreams']) {
      const st = statSync(join(dir, 'data', f));
      expect(st.mode & 0o777, f).toBe(0o600);
      expect(st.uid, f).toBe(eximUid);
    }
    const conf = readFileSync(join(dir, 'exim.conf'), 'utf8');
    for (const s of SECRETS) expect(conf).not.toContain(s);
    const users = readFileSync(join(dir, 'data', 'relay-users'), 'utf8');
    expect(users).toMatch(/^school-a: \$6\$[./0-9A-Za-z]{16}\$/m);
    expect(users).toMatch(/^relay-b@host\.example: \$6\$/m);
    for (const s of SECRETS) expect(users).not.toContain(s);
    const upstreams = readFileSync(join(dir, 'data', 'upstreams'), 'utf8');
    expect(upstreams).toContain(`pass=${Buffer.from(UP_PASS).toString('base64')}`);
    expect(upstreams).not.toContain(UP_PASS);
    expect(readdirSync(join(dir, 'data')).some((f) => f.includes('mailvia-new'))).toBe(false);
  });

  it('Exim reads the configuration as intended: loopback only, immediate delivery, the ACLs in place', () => {
    const conf = join(dir, 'exim.conf');
    const out = execFileSync(
      tools.exim,
      [
        '-C',
        conf,
        '-bP',
        'local_interfaces',
        'daemon_smtp_ports',
        'smtp_accept_queue_per_connection',
        'queue_only',
        'acl_smtp_rcpt',
        'tls_advertise_hosts',
      ],
      { encoding: 'utf8' },
    );
    expect(out).toContain('local_interfaces = <; 127.0.0.1');
    expect(out).toContain('daemon_smtp_ports = 587');
    expect(out).toContain('smtp_accept_queue_per_connection = 0');
    expect(out).toContain('no_queue_only');
    expect(out).toContain('acl_smtp_rcpt = mailvia_acl_rcpt');
    expect(out).toMatch(/tls_advertise_hosts = *$/m);
  });

  it('a configuration Exim refuses replaces nothing and leaves no temporary file', async () => {
    const before = readFileSync(join(dir, 'exim.conf'), 'utf8');
    const beforeUsers = readFileSync(join(dir, 'data', 'relay-users'), 'utf8');
    const relay = generateRelay(orgs.slice(0, 1), {
      dataDir: join(dir, 'data'),
      spoolDirectory: join(dir, 'spool'),
      logDirectory: join(dir, 'log'),
      pidFile: join(dir, 'run/exim.pid'),
    });
    const conf = relay.files.find((f) => f.path === 'exim.conf')!;
    conf.content += '\nno_such_option = 1\n';
    const err = await installRelay(relay, { outDir: dir, eximBin: tools.exim }).catch((e) => e);
    expect(err).toBeInstanceOf(RelayValidationError);
    expect(err.message).toMatch(/no_such_option/);
    expect(readFileSync(join(dir, 'exim.conf'), 'utf8')).toBe(before);
    expect(readFileSync(join(dir, 'data', 'relay-users'), 'utf8')).toBe(beforeUsers);
    for (const d of [dir, join(dir, 'data')]) expect(readdirSync(d).some((f) => f.includes('mailvia-new'))).toBe(false);
  });

  it('the doctor flags a relay that queues instead of delivering (smtp_accept_queue_per_connection, queue_only)', async () => {
    const conf = join(dir, 'queueing.conf');
    writeFileSync(
      conf,
      readFileSync(join(dir, 'exim.conf'), 'utf8')
        .replace('smtp_accept_queue_per_connection = 0', 'smtp_accept_queue_per_connection = 10')
        .replace('queue_only = false', 'queue_only = true'),
    );
    const report = await runDoctor({ config: conf, eximBin: tools.exim, port: await refusedPort() });
    const by = (id: string) => report.checks.find((c) => c.id === id);
    expect(by('queue-per-connection')?.status).toBe('fail');
    expect(by('queue-per-connection')?.title).toMatch(/11th message/);
    expect(by('queue-only')?.status).toBe('fail');
    expect(by('listening')?.status).toBe('fail');
    expect(report.exitCode).toBe(2);
  });
});

describe('Debian split configuration', () => {
  it('the fragments build with update-exim4.conf into a configuration exim -bV accepts, with immediate delivery and our MAIL ACL', async () => {
    const dir = tmp();
    const relay = generateRelay(orgs, { target: 'debian', dataDir: join(dir, 'data') });
    const report = await installRelay(relay, { outDir: dir, eximBin: tools.exim });
    expect(report.validation).toMatch(/update-exim4.conf .* ok/);
    // build it again, as an operator would after copying the fragments into /etc/exim4/conf.d
    const confDir = join(dir, 'etc-exim4');
    cpSync('/etc/exim4', confDir, { recursive: true });
    cpSync(join(dir, 'conf.d'), join(confDir, 'conf.d'), { recursive: true });
    // the instructions' first step: Debian's split configuration
    const dc = join(confDir, 'update-exim4.conf.conf');
    writeFileSync(
      dc,
      `${readFileSync(dc, 'utf8').replace(/^dc_use_split_config=.*$/m, '')}\ndc_use_split_config='true'\n`,
    );
    const out = join(dir, 'exim4.conf');
    execFileSync('update-exim4.conf', ['-d', confDir, '-o', out], { stdio: 'ignore' });
    const bp = execFileSync(
      tools.exim,
      ['-C', out, '-bP', 'smtp_accept_queue_per_connection', 'acl_smtp_mail', 'local_interfaces'],
      { encoding: 'utf8' },
    );
    expect(bp).toContain('smtp_accept_queue_per_connection = 0');
    expect(bp).toContain('acl_smtp_mail = mailvia_acl_check_mail');
    expect(bp).toMatch(/local_interfaces = <; 127\.0\.0\.1 ; ::1/);
    const routers = execFileSync(tools.exim, ['-C', out, '-bP', 'router_list'], { encoding: 'utf8' });
    // before every Debian router, so an organisation's mail never takes the system's way out
    expect(routers.split('\n').slice(0, 2)).toEqual(['mailvia_relay', 'mailvia_refuse']);
    const auths = execFileSync(tools.exim, ['-C', out, '-bP', 'authenticator_list'], { encoding: 'utf8' });
    expect(auths.split('\n').filter(Boolean).sort()).toEqual([
      'cram_md5',
      'login',
      'mailvia_login',
      'mailvia_plain',
      'plain',
    ]);
  });
});

describe('cPanel sections', () => {
  it('hold the routers, transports and client authenticators (cPanel keeps its own server AUTH), checked by exim -bV', async () => {
    const dir = tmp();
    const relay = generateRelay(
      await validateOrganisations(
        [{ ...input()[0]!, relay: { user: 'relay-school-a@host.example', password: RELAY_PASS } }],
        { env },
      ),
      { target: 'cpanel', dataDir: join(dir, 'data') },
    );
    const report = await installRelay(relay, { outDir: dir, eximBin: tools.exim, chown: false });
    expect(report.validation).toMatch(/cPanel sections .* ok/);
    const snippet = readFileSync(join(dir, 'cpanel/exim.conf.local.mailvia'), 'utf8');
    for (const s of ['@CONFIG@', '@AUTH@', '@PREROUTERS@', '@TRANSPORTSTART@', '@RETRYSTART@'])
      expect(snippet).toContain(s);
    expect(snippet).toContain('dovecot_plain:dovecot_login');
    expect(snippet).not.toMatch(/server_condition/);
    expect(existsSync(join(dir, 'data', 'relay-users'))).toBe(false);
    expect(readFileSync(join(dir, 'data', 'relay-ids'), 'utf8')).toContain('relay-school-a@host.example: school-a');
    expect(relay.instructions).toMatch(/buildeximconf/);
  });
});

describe('mailvia-exim CLI', () => {
  const io = () => {
    const o = { out: '', err: '', io: { out: (t: string) => (o.out += t), err: (t: string) => (o.err += t) } };
    return o;
  };

  it('generate writes the relay, prints the files and their modes, and never a secret', async () => {
    const dir = tmp();
    const orgsFile = join(dir, 'orgs.json');
    writeFileSync(orgsFile, JSON.stringify(input()));
    process.env.SCHOOL_B_UP = env.SCHOOL_B_UP;
    const o = io();
    const code = await runCli(
      [
        'generate',
        '--orgs',
        orgsFile,
        '--out',
        dir,
        '--data-dir',
        join(dir, 'data'),
        '--spool-dir',
        join(dir, 'spool'),
        '--log-dir',
        join(dir, 'log'),
        '--pid-file',
        join(dir, 'run/exim.pid'),
        '--listen',
        '127.0.0.1:2587',
        '--exim',
        tools.exim,
      ],
      o.io,
    );
    expect(code, o.err).toBe(0);
    expect(o.out).toMatch(/relay-users {2}\(mode 0600, owner Debian-exim\)/);
    expect(o.out).toMatch(/Checked: exim -bV/);
    expect(readFileSync(join(dir, 'exim.conf'), 'utf8')).toContain('daemon_smtp_ports = 2587');
    for (const s of SECRETS) expect(o.out + o.err).not.toContain(s);

    const dry = io();
    expect(await runCli(['generate', '--orgs', orgsFile, '--dry-run'], dry.io)).toBe(0);
    expect(dry.out).toContain('smtp_accept_queue_per_connection = 0');
    expect(dry.out).toMatch(/upstreams \(mode 0600, secret: not shown\)/);
    for (const s of SECRETS) expect(dry.out).not.toContain(s);
  });

  it('refuses bad input with exit code 3 and the field at fault', async () => {
    const dir = tmp();
    const orgsFile = join(dir, 'orgs.json');
    const x = input();
    x[0]!.upstream.port = 25;
    writeFileSync(orgsFile, JSON.stringify(x));
    const o = io();
    expect(await runCli(['generate', '--orgs', orgsFile, '--dry-run'], o.io)).toBe(3);
    expect(o.err).toMatch(/organisations\[0\]\.upstream\.port/);
    expect(await runCli(['generate', '--orgs', orgsFile, '--target', 'plesk'], io().io)).toBe(3);
    expect(await runCli(['doctor', '--port', 'x'], io().io)).toBe(3);
    expect(await runCli(['frobnicate'], io().io)).toBe(3);
  });

  it('hash-password prints a hash Exim accepts for that password', async () => {
    const o = io();
    expect(await runCli(['hash-password'], { ...o.io, stdin: async () => `${RELAY_PASS}\n` })).toBe(0);
    const hash = o.out.trim();
    expect(hash).toMatch(/^\$6\$/);
    expect(eximBe(`\${if crypteq{${RELAY_PASS}}{\\N${hash}\\N}{yes}{no}}`)).toBe('yes');
  });
});

describe('exim:// URLs', () => {
  it('parse into route data (percent-encoded password, port defaulting to 587)', () => {
    expect(eximRoute.fromUrl(new URL('exim://school-a:p%40ss-word-1234@127.0.0.1'))).toEqual({
      type: 'exim',
      user: 'school-a',
      pass: 'p@ss-word-1234',
      host: '127.0.0.1',
    });
    expect(
      eximRoute.fromUrl(new URL('exim://school-a:pw-123456789012@127.0.0.1:2587?maxConnections=2&pool=false')),
    ).toMatchObject({
      host: '127.0.0.1',
      port: 2587,
      maxConnections: 2,
      pool: false,
    });
  });

  it('refuse a URL without a password or with an unknown parameter, without echoing the password', () => {
    expect(() => eximRoute.fromUrl(new URL('exim://school-a@127.0.0.1:587'))).toThrow(RouteConfigError);
    let err: unknown;
    try {
      eximRoute.fromUrl(new URL('exim://school-a:secret-relay-pass-9@127.0.0.1:587?tls=off'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RouteConfigError);
    expect((err as Error).message).toMatch(/query\.tls/);
    expect((err as Error).message).not.toContain('secret-relay-pass-9');
  });
});
