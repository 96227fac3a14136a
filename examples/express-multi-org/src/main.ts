import { resolve } from 'node:path';
import { runDemo } from './demo.js';

// `pnpm demo` sends and exits; `pnpm demo --serve` keeps the app running so its pages can be opened.
const serve = process.argv.includes('--serve');
const dir = resolve(process.env.INIT_CWD ?? process.cwd(), '.outbox');
const demo = await runDemo({ dir, log: (line) => console.log(line) });
if (serve) {
  console.log(
    `\nServing on ${demo.url}: POST ${demo.url}/mail with an X-Organisation header; the outbox page is ${demo.url}/outbox. Ctrl+C stops.`,
  );
  process.on('SIGINT', () => void demo.close().then(() => process.exit(0)));
} else {
  await demo.close();
  console.log('\nDone. Run `bash scripts/demo.sh --serve` to keep the app (and its outbox page) running.');
}
