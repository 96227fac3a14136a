import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { type EximCommandOptions, eximCheckConfig } from './exim.js';
import type { GeneratedFile, GeneratedRelay } from './generate.js';

/** Options of {@link installRelay}. */
export interface InstallRelayOptions extends Pick<EximCommandOptions, 'eximBin' | 'timeout'> {
  /** Where relative files (the configuration) go. */
  outDir: string;
  /**
   * Check the configuration with Exim (`exim -bV -C`) before anything is replaced; on failure
   * nothing is replaced. @default true
   */
  validate?: boolean;
  /**
   * Give the credentials files (and the standalone spool and log directories) to the Exim user. Needs
   * root; skipped (with a note) otherwise. @default true when running as root
   */
  chown?: boolean;
  /** Debian: the configuration directory the fragments are checked against. @default '/etc/exim4' */
  debianConfDir?: string;
  /** Create the standalone relay's spool, log and pid directories. @default true */
  createDirectories?: boolean;
}

/** One file written. */
export interface InstalledFile {
  path: string;
  mode: string;
  owner: string;
  secret: boolean;
  description: string;
}

/** What {@link installRelay} did. Holds no secret. */
export interface InstallReport {
  files: InstalledFile[];
  /** How the configuration was checked (`exim -bV …`), or why it was not. */
  validation: string;
  notes: string[];
}

/** The configuration Exim refused: nothing was replaced. */
export class RelayValidationError extends Error {
  readonly code = 'ERELAYINVALID';
  /** What Exim said. */
  readonly output: string;
  constructor(message: string, output: string) {
    super(`${message}\n${output.trim()}`);
    this.name = 'RelayValidationError';
    this.output = output;
  }
}

function ids(user: string, group: string): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(
      execFileSync('id', ['-u', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
    );
    const line = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const gid = Number(line.split(':')[2]);
    if (Number.isInteger(uid) && Number.isInteger(gid)) return { uid, gid };
  } catch {
    // the user or group does not exist here
  }
  return undefined;
}

function target(file: GeneratedFile, outDir: string): string {
  return isAbsolute(file.path) ? file.path : join(outDir, file.path);
}

/** Writes a file next to its destination (same directory, so the rename is atomic), synced. */
async function stage(
  path: string,
  content: string,
  mode: number,
  owner?: { uid: number; gid: number },
): Promise<string> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.mailvia-new-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.writeFile(content, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

function run(bin: string, args: string[], timeout: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { timeout, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}${err && typeof err.code === 'string' ? err.message : ''}` });
    });
  });
}

/** Builds the configuration Exim will read, from the staged files, and checks it with `-bV`. */
async function validate(
  relay: GeneratedRelay,
  staged: Map<GeneratedFile, string>,
  options: InstallRelayOptions,
): Promise<string> {
  const exim = { ...(options.eximBin ? { eximBin: options.eximBin } : {}), timeout: options.timeout ?? 15_000 };
  if (relay.target === 'standalone') {
    const conf = [...staged].find(([f]) => f.path === relay.configFile)![1];
    const r = await eximCheckConfig({ ...exim, config: conf });
    if (!r.ok) throw new RelayValidationError('Exim refused the new configuration; nothing was replaced:', r.output);
    return `exim -bV -C ${conf}: ok (${r.version?.banner ?? 'Exim'})`;
  }
  const work = await mkdtemp(join(tmpdir(), 'mailvia-exim-check-'));
  try {
    await chmod(work, 0o755); // Exim reads included files after giving up root
    if (relay.target === 'debian') {
      const confDir = options.debianConfDir ?? '/etc/exim4';
      await cp(confDir, join(work, 'exim4'), { recursive: true });
      // the fragments need Debian's split configuration (the operator turns it on: see the instructions)
      const dc = join(work, 'exim4', 'update-exim4.conf.conf');
      const dcText = await readFile(dc, 'utf8').catch(() => '');
      await writeFile(dc, `${dcText.replace(/^dc_use_split_config=.*$/m, '')}\ndc_use_split_config='true'\n`);
      for (const [f, tmp] of staged) {
        if (isAbsolute(f.path)) continue;
        let content = await readFile(tmp, 'utf8');
        // the DATA statements are included by path: check the staged copy, not the live one
        const data = [...staged].find(([g]) => g.path.endsWith('/acl-check-data'));
        if (data) content = content.split(`${relay.options.dataDir}/acl-check-data`).join(data[1]);
        await writeFile(join(work, 'exim4', f.path), content);
      }
      const out = join(work, 'exim4.conf');
      const gen = await run('update-exim4.conf', ['-d', join(work, 'exim4'), '-o', out], exim.timeout);
      if (gen.code !== 0) throw new RelayValidationError('update-exim4.conf failed on the new fragments:', gen.output);
      const r = await eximCheckConfig({ ...exim, config: out });
      if (!r.ok) throw new RelayValidationError('Exim refused the new configuration; nothing was replaced:', r.output);
      return `update-exim4.conf -d <copy of ${confDir} with the fragments, split configuration> then exim -bV -C: ok`;
    }
    // cPanel: the sections cannot be built without cPanel; check them inside a minimal configuration
    const snippet = await readFile([...staged].find(([f]) => f.path.startsWith('cpanel/'))![1], 'utf8');
    const section = (name: string) => {
      const m = new RegExp(`^@${name}@\\n([\\s\\S]*?)(?=^@[A-Z]+@|$(?![\\s\\S]))`, 'm').exec(snippet);
      return m?.[1] ?? '';
    };
    const conf = `${section('CONFIG')}
begin acl
begin routers
${section('PREROUTERS')}
begin transports
${section('TRANSPORTSTART')}
begin retry
${section('RETRYSTART')}
begin authenticators
${section('AUTH')}`;
    const file = join(work, 'cpanel-check.conf');
    await writeFile(file, conf);
    const r = await eximCheckConfig({ ...exim, config: file });
    if (!r.ok) throw new RelayValidationError('Exim refused the cPanel sections; nothing was replaced:', r.output);
    return 'exim -bV on the cPanel sections inside a minimal configuration: ok (not checked against cPanel itself)';
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Writes a generated relay safely: every file is written next to its destination and synced,
 * secret files with mode 0600 owned by the Exim user; the configuration is checked by Exim's own
 * `-bV` before anything is replaced; then each file is renamed into place (credentials first,
 * configuration last), so a reader never sees a half-written file. Prints no secret.
 */
export async function installRelay(relay: GeneratedRelay, options: InstallRelayOptions): Promise<InstallReport> {
  const root = process.getuid?.() === 0;
  const chown = options.chown ?? root;
  const notes: string[] = [];
  const o = relay.options;
  const exim = chown ? ids(o.eximUser, o.eximGroup) : undefined;
  if (chown && !exim)
    notes.push(`user ${o.eximUser} or group ${o.eximGroup} does not exist here: files keep their owner`);
  if (!chown) notes.push(`not root: the credentials files are 0600 but owned by you, not by ${o.eximUser}`);
  const staged = new Map<GeneratedFile, string>();
  try {
    for (const f of relay.files) {
      // the credentials files (absolute paths, in the data directory) belong to the Exim user
      staged.set(f, await stage(target(f, options.outDir), f.content, f.mode, isAbsolute(f.path) ? exim : undefined));
    }
    const validation =
      options.validate === false ? 'not checked (validate: false)' : await validate(relay, staged, options);
    // credentials first, configuration last: the new configuration never meets old credentials files
    const order = [...staged].sort(([a], [b]) => Number(!isAbsolute(a.path)) - Number(!isAbsolute(b.path)));
    for (const [f, tmp] of order) await rename(tmp, target(f, options.outDir));
    staged.clear();
    if (relay.target === 'standalone' && options.createDirectories !== false) {
      for (const dir of [o.spoolDirectory, o.logDirectory, dirname(o.pidFile)]) {
        await mkdir(dir, { recursive: true, mode: 0o750 });
        if (exim) {
          const { chown: chownDir } = await import('node:fs/promises');
          await chownDir(dir, exim.uid, exim.gid);
        }
      }
    }
    return {
      files: relay.files.map((f) => ({
        path: target(f, options.outDir),
        mode: `0${f.mode.toString(8)}`,
        owner: isAbsolute(f.path) && exim ? o.eximUser : 'unchanged',
        secret: f.secret,
        description: f.description,
      })),
      validation,
      notes,
    };
  } finally {
    for (const tmp of staged.values()) await rm(tmp, { force: true });
  }
}
