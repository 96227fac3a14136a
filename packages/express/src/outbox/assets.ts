/**
 * The outbox page: one HTML shell, one stylesheet, one script, served from the mount point so a
 * strict CSP (`script-src 'self'`, no inline code) holds. The script builds the DOM with
 * `textContent` only: nothing from a mail is ever parsed as HTML on the app's origin. A mail's
 * own HTML is shown in an iframe sandboxed without `allow-scripts` or `allow-same-origin`.
 */

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}

export function outboxHtml(options: { title: string; scoped: boolean; allowClear: boolean }): string {
  const title = escapeHtml(options.title);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title}</title>
<link rel="stylesheet" href="assets/outbox.css">
</head>
<body data-scoped="${options.scoped}" data-clear="${options.allowClear}">
<header class="top">
  <div class="brand">
    <svg class="logo" viewBox="0 0 24 24" aria-hidden="true"><path d="M3 6.5A2.5 2.5 0 0 1 5.5 4h13A2.5 2.5 0 0 1 21 6.5v11a2.5 2.5 0 0 1-2.5 2.5h-13A2.5 2.5 0 0 1 3 17.5v-11Zm2.2-.5 6.8 5.3L18.8 6H5.2ZM19 7.8l-6.4 5a1 1 0 0 1-1.2 0L5 7.8v9.7c0 .3.2.5.5.5h13c.3 0 .5-.2.5-.5V7.8Z"/></svg>
    <h1>${title}</h1>
    <span class="badge" title="Development mode: every mail is captured here and nothing is sent">development · nothing is sent</span>
  </div>
  <div class="actions">
    <span id="live" class="live" role="status">connecting…</span>
    ${options.allowClear ? '<button id="clear" type="button" class="ghost">Clear</button>' : ''}
  </div>
</header>
<main class="layout${options.scoped ? ' scoped' : ''}">
  <nav id="orgs" class="orgs" aria-label="Organisations"></nav>
  <section class="list-pane" aria-label="Captured mail">
    <ul id="mails" class="mails"></ul>
    <p id="empty" class="empty" hidden>No mail captured yet. Send one: it appears here at once.</p>
  </section>
  <section id="detail" class="detail" aria-label="Selected mail">
    <p class="placeholder">Select a mail to see it.</p>
  </section>
</main>
<script src="assets/outbox.js"></script>
</body>
</html>`;
}

export const OUTBOX_CSS = `
:root {
  --bg: #f6f7f9; --panel: #fff; --line: #e3e6eb; --text: #1d2430; --muted: #677084;
  --accent: #3b5bdb; --accent-soft: #e8edff; --fresh: #fff7d6; --chip: #eef1f5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 14px; color: var(--text); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; height: 100vh; display: flex; flex-direction: column; }
.top { display: flex; align-items: center; justify-content: space-between; padding: 0 16px; height: 52px;
  background: #1f2a44; color: #fff; flex: none; }
.brand { display: flex; align-items: center; gap: 10px; }
.logo { width: 22px; height: 22px; fill: #9fb4ff; }
.top h1 { font-size: 16px; font-weight: 600; margin: 0; }
.badge { font-size: 12px; background: #33405f; color: #d6defa; padding: 2px 8px; border-radius: 10px; }
.actions { display: flex; align-items: center; gap: 12px; }
.live { font-size: 12px; color: #c5cde0; }
.live.on::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  background: #4cd68a; margin-right: 6px; vertical-align: 1px; }
button { font: inherit; cursor: pointer; }
.ghost { background: transparent; color: #fff; border: 1px solid #55617f; border-radius: 6px; padding: 4px 12px; }
.ghost:hover { background: #2c3856; }
.layout { flex: 1; display: grid; grid-template-columns: 210px minmax(280px, 380px) 1fr; min-height: 0; }
.layout.scoped { grid-template-columns: minmax(280px, 380px) 1fr; }
.layout.scoped .orgs { display: none; }
.orgs { border-right: 1px solid var(--line); padding: 12px 8px; overflow: auto; background: #fbfbfc; }
.orgs h2 { font-size: 11px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 4px 8px 8px; }
.org { display: flex; justify-content: space-between; width: 100%; border: 0; background: none; text-align: left;
  padding: 7px 8px; border-radius: 6px; color: var(--text); }
.org:hover { background: #eef0f4; }
.org[aria-current="true"] { background: var(--accent-soft); color: var(--accent); font-weight: 600; }
.count { color: var(--muted); font-variant-numeric: tabular-nums; }
.list-pane { border-right: 1px solid var(--line); overflow: auto; background: var(--panel); }
.mails { list-style: none; margin: 0; padding: 0; }
.mail { display: block; width: 100%; text-align: left; border: 0; border-bottom: 1px solid var(--line);
  background: none; padding: 10px 14px; color: var(--text); }
.mail:hover { background: #f3f5f8; }
.mail[aria-current="true"] { background: var(--accent-soft); box-shadow: inset 3px 0 0 var(--accent); }
.mail.fresh { animation: fresh 2.5s ease-out; }
@keyframes fresh { from { background: var(--fresh); } to { background: transparent; } }
.mail .row { display: flex; justify-content: space-between; gap: 8px; }
.mail .subject { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.mail .time { color: var(--muted); font-size: 12px; white-space: nowrap; }
.mail .rcpt { color: var(--muted); font-size: 13px; margin-top: 3px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.chip { display: inline-block; background: var(--chip); color: #42506a; font-size: 11px; padding: 1px 7px;
  border-radius: 9px; margin-top: 5px; }
.empty, .placeholder { color: var(--muted); padding: 24px; margin: 0; }
.detail { overflow: auto; background: var(--panel); display: flex; flex-direction: column; min-width: 0; }
.head { padding: 16px 20px 8px; border-bottom: 1px solid var(--line); }
.head h2 { margin: 0 0 10px; font-size: 19px; font-weight: 600; }
.fields { display: grid; grid-template-columns: max-content 1fr; gap: 3px 12px; margin: 0; font-size: 13px; }
.fields dt { color: var(--muted); }
.fields dd { margin: 0; overflow-wrap: anywhere; }
.tools { display: flex; justify-content: space-between; align-items: flex-end; margin-top: 12px; }
.tabs { display: flex; gap: 2px; }
.tab { border: 0; background: none; padding: 7px 12px; border-bottom: 2px solid transparent; color: var(--muted); }
.tab[aria-selected="true"] { color: var(--accent); border-bottom-color: var(--accent); font-weight: 600; }
.tab:disabled { opacity: .4; cursor: default; }
.download { color: var(--accent); text-decoration: none; font-size: 13px; padding: 6px 0; }
.download:hover { text-decoration: underline; }
.panel { flex: 1; min-height: 0; display: flex; flex-direction: column; }
.panel iframe { flex: 1; width: 100%; min-height: 420px; border: 0; background: #fff; }
.panel pre { margin: 0; padding: 16px 20px; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.headers { border-collapse: collapse; width: 100%; font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.headers td { border-bottom: 1px solid var(--line); padding: 4px 20px; vertical-align: top; overflow-wrap: anywhere; }
.headers td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
.attachments { padding: 10px 20px; border-top: 1px solid var(--line); font-size: 13px; }
.attachments a { color: var(--accent); margin-right: 14px; }
`;

export const OUTBOX_JS = `(() => {
  'use strict';
  const $ = (s) => document.querySelector(s);
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
    return e;
  };
  const scoped = document.body.dataset.scoped === 'true';
  const state = { org: undefined, mails: [], selected: null, tab: 'html', detail: null, fresh: new Set() };

  const orgLabel = (id) => (id === '' || id === null ? 'No organisation' : id);
  const time = (iso) => {
    const d = new Date(iso);
    return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  };
  async function api(path, init) {
    const res = await fetch(path, init);
    if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
    return res.json();
  }

  async function refresh() {
    const q = state.org === undefined ? '' : '?organisation=' + encodeURIComponent(state.org);
    const data = await api('api/mails' + q);
    state.mails = data.mails;
    renderOrgs(data);
    renderList();
  }

  function renderOrgs(data) {
    if (scoped) return;
    const entry = (id, label, count) =>
      el('button', { class: 'org', type: 'button', 'aria-current': String(state.org === id), 'data-org': id === undefined ? '*' : id,
        onclick: () => { state.org = id; refresh(); } },
        el('span', { text: label }), el('span', { class: 'count', text: String(count) }));
    $('#orgs').replaceChildren(
      el('h2', { text: 'Organisations' }),
      entry(undefined, 'All organisations', data.total),
      ...data.organisations.map((o) => entry(o.id, orgLabel(o.id), o.count)),
    );
  }

  function renderList() {
    const items = state.mails.map((m) =>
      el('li', {},
        el('button', { class: 'mail' + (state.fresh.has(m.id) ? ' fresh' : ''), type: 'button', 'data-id': m.id,
          'aria-current': String(state.selected === m.id), onclick: () => select(m.id) },
          el('div', { class: 'row' },
            el('span', { class: 'subject', text: m.subject || '(no subject)' }),
            el('time', { class: 'time', datetime: m.capturedAt, text: time(m.capturedAt) })),
          el('div', { class: 'rcpt', text: 'To: ' + m.to.join(', ') }),
          scoped ? null : el('span', { class: 'chip', text: orgLabel(m.organisation) }))));
    $('#mails').replaceChildren(...items);
    $('#empty').hidden = items.length > 0;
    state.fresh.clear();
  }

  async function select(id) {
    state.selected = id;
    history.replaceState(null, '', '#mail=' + encodeURIComponent(id));
    renderList();
    try {
      state.detail = await api('api/mails/' + encodeURIComponent(id));
    } catch {
      state.detail = null;
      $('#detail').replaceChildren(el('p', { class: 'placeholder', text: 'This mail is no longer in the outbox.' }));
      return;
    }
    if (state.tab === 'html' && !state.detail.hasHtml) state.tab = 'text';
    renderDetail();
  }

  function renderDetail() {
    const d = state.detail;
    if (!d) return;
    const base = 'mails/' + encodeURIComponent(d.id) + '/';
    const field = (name, value) => (value ? [el('dt', { text: name }), el('dd', { text: value })] : []);
    const tab = (id, label, disabled) =>
      el('button', { class: 'tab', type: 'button', role: 'tab', 'aria-selected': String(state.tab === id), disabled,
        'data-tab': id, onclick: () => { state.tab = id; renderDetail(); } }, label);
    let panel;
    if (state.tab === 'html') {
      panel = el('iframe', { sandbox: '', src: base + 'html', title: 'HTML body of the mail', referrerpolicy: 'no-referrer' });
    } else if (state.tab === 'text') {
      panel = el('pre', { class: 'text', text: d.text || '(this mail has no text part)' });
    } else if (state.tab === 'headers') {
      panel = el('table', { class: 'headers' }, el('tbody', {}, d.headers.map((line) => {
        const i = line.indexOf(':');
        return el('tr', {}, el('td', { text: line.slice(0, i) }), el('td', { text: line.slice(i + 1).trim() }));
      })));
    } else {
      panel = el('pre', { class: 'raw', text: d.raw + (d.rawTruncated ? '\\n… (truncated: download the .eml for all of it)' : '') });
    }
    const attachments = d.attachments.filter((a) => !a.inline);
    const parts = [
      el('div', { class: 'head' },
        el('h2', { text: d.subject || '(no subject)' }),
        el('dl', { class: 'fields' },
          field('From', d.from), field('To', d.to.join(', ')), field('Cc', d.cc.join(', ')), field('Bcc', d.bcc.join(', ')),
          scoped ? [] : field('Organisation', orgLabel(d.organisation)),
          field('Captured', new Date(d.capturedAt).toLocaleString()), field('Message-ID', d.messageId)),
        el('div', { class: 'tools' },
          el('div', { class: 'tabs', role: 'tablist' },
            tab('html', 'HTML', !d.hasHtml), tab('text', 'Text'), tab('headers', 'Headers'), tab('raw', 'Raw')),
          el('a', { class: 'download', href: base + 'eml', download: '' }, 'Download .eml'))),
      el('div', { class: 'panel', role: 'tabpanel' }, panel),
      attachments.length
        ? el('div', { class: 'attachments' }, 'Attachments: ',
            attachments.map((a) => el('a', { href: base + 'attachments/' + a.index, download: a.filename }, a.filename + ' (' + a.size + ' B)')))
        : null,
    ];
    $('#detail').replaceChildren(...parts.filter(Boolean));
  }

  let polling;
  function connect() {
    const live = $('#live');
    if (!window.EventSource) return poll();
    const es = new EventSource('events');
    es.addEventListener('open', () => {
      live.textContent = 'live';
      live.classList.add('on');
      clearInterval(polling);
      polling = undefined;
    });
    es.addEventListener('captured', (ev) => {
      state.fresh.add(JSON.parse(ev.data).id);
      refresh();
    });
    es.addEventListener('error', () => {
      live.textContent = 'reconnecting…';
      live.classList.remove('on');
      poll();
    });
  }
  function poll() {
    if (!polling) polling = setInterval(refresh, 4000);
  }

  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const i = state.mails.findIndex((m) => m.id === state.selected);
    const next = state.mails[ev.key === 'ArrowDown' ? i + 1 : Math.max(0, i - 1)];
    if (next) { ev.preventDefault(); select(next.id); }
  });
  const clear = $('#clear');
  if (clear) clear.addEventListener('click', async () => {
    const q = state.org === undefined || state.org === '' ? '' : '?organisation=' + encodeURIComponent(state.org);
    await api('api/clear' + q, { method: 'POST', headers: { 'X-Mailvia-Outbox': '1' } });
    state.selected = null;
    state.detail = null;
    $('#detail').replaceChildren(el('p', { class: 'placeholder', text: 'Select a mail to see it.' }));
    refresh();
  });

  refresh().then(() => {
    const m = /^#mail=(.+)$/.exec(location.hash);
    if (m) select(decodeURIComponent(m[1]));
  });
  connect();
})();
`;
