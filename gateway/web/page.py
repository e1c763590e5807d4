# ruff: noqa: E501  (an embedded HTML document: its lines are not Python)
"""The status page: one self-contained HTML document (no build step, no external files) that
refreshes itself from ``/status.json`` every two seconds.

States are words and symbols as well as colours; the layout is a column of cards on a narrow
screen. Everything shown comes from ``/status.json`` and is set as text, never as markup.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PBX gateway status</title>
<style>
  :root { --ok: #1a7f37; --bad: #b42318; --warn: #9a6700; --fg: #1f2328; --muted: #59636e;
          --line: #d1d9e0; --bg: #f6f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  header { padding: 12px 16px; background: #fff; border-bottom: 1px solid var(--line);
           display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; }
  h1 { font-size: 18px; margin: 0; }
  h2 { font-size: 15px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); }
  main { padding: 12px 16px; display: grid; gap: 12px;
         grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
  section.wide { grid-column: 1 / -1; }
  .badge { font-weight: 700; padding: 1px 8px; border-radius: 10px; border: 2px solid; }
  .ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
  .muted { color: var(--muted); }
  .cards { display: grid; gap: 10px; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); }
  .pbx { border: 1px solid var(--line); border-left-width: 6px; border-radius: 6px; padding: 8px 10px; }
  .pbx.ok { border-left-color: var(--ok); } .pbx.bad { border-left-color: var(--bad); }
  .pbx.warn { border-left-color: var(--warn); }
  .pbx .name { font-weight: 700; color: var(--fg); }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 6px 0 0; }
  dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; color: var(--fg); }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line);
           vertical-align: top; overflow-wrap: break-word; word-break: break-word; }
  ul.reasons { margin: 4px 0 0; padding-left: 20px; }
  #stale { display: none; } #stale.on { display: inline; }
  @media (max-width: 520px) {
    main { padding: 8px; grid-template-columns: 1fr; }
    .cards { grid-template-columns: 1fr; }
    table thead { display: none; }
    table tr { display: block; border-bottom: 1px solid var(--line); padding: 4px 0; }
    table td { display: block; border: 0; padding: 1px 6px; }
  }
</style>
</head>
<body>
<header>
  <h1>PBX gateway</h1>
  <span id="overall" class="badge" role="status" aria-live="polite">loading...</span>
  <span id="instance" class="muted"></span>
  <span id="updated" class="muted"></span>
  <span id="stale" class="bad">&#9888; gateway not answering: showing the last status</span>
</header>
<main>
  <section class="wide" id="why" hidden><h2>Not ready because</h2><ul class="reasons" id="reasons"></ul></section>
  <section class="wide"><h2>PBXs</h2><div class="cards" id="pbxs"></div></section>
  <section><h2>Broker</h2><dl id="broker"></dl></section>
  <section><h2>Commands</h2><dl id="commands"></dl></section>
  <section><h2>Configuration</h2><dl id="config"></dl></section>
  <section class="wide"><h2>Recent problems (last 20)</h2>
    <table><thead><tr><th>time</th><th>level</th><th>event</th><th>tenant</th><th>detail</th></tr></thead>
    <tbody id="errors"></tbody></table></section>
</main>
<script>
"use strict";
const SYMBOL = { ok: "\\u25CF", warn: "\\u25B2", bad: "\\u2716" };
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function since(iso, now) {
  if (!iso) return "";
  return age((now - Date.parse(iso)) / 1000) + " ago";
}
function kind(state) {
  if (state === "connected") return "ok";
  if (state === "starting" || state === "not owned here") return "warn";
  return "bad";
}
function pairs(dl, rows) {
  dl.replaceChildren();
  for (const [k, v, cls] of rows) { dl.append(el("dt", k)); dl.append(el("dd", v, cls)); }
}
function render(s) {
  const now = Date.parse(s.time) || Date.now();
  const overall = document.getElementById("overall");
  const ready = s.ready;
  overall.textContent = (ready ? SYMBOL.ok + " READY" : SYMBOL.bad + " NOT READY") + " (" + s.phase + ")";
  overall.className = "badge " + (ready ? "ok" : "bad");
  document.getElementById("instance").textContent = s.instance ? "instance " + s.instance : "";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const why = document.getElementById("why");
  const reasons = document.getElementById("reasons");
  reasons.replaceChildren(...(s.reasons || []).map(r => el("li", r)));
  why.hidden = !(s.reasons && s.reasons.length);

  const cards = document.getElementById("pbxs");
  cards.replaceChildren();
  if (!(s.pbxs || []).length) cards.append(el("p", "No PBX configured (pbxs: in the config file).", "muted"));
  for (const p of s.pbxs || []) {
    const link = p.link || {};
    const state = p.owned ? (link.state || "starting") : "not owned here";
    const k = kind(state);
    const card = el("div", null, "pbx " + k);
    card.dataset.tenant = p.tenant;
    card.dataset.state = state;
    const title = el("div");
    title.append(el("span", p.tenant, "name"), el("span", " \\u00B7 " + p.vendor, "muted"));
    const badge = el("div", SYMBOL[k] + " " + state, "state " + k);
    badge.setAttribute("data-role", "state");
    const rows = [["since", link.since ? since(link.since, now) : "-"]];
    if (link.reason) rows.push(["reason", link.reason]);
    rows.push(["owner", p.owner || "another instance or none"]);
    const expiry = link.token_expires_at || link.token_expires;
    rows.push(["token expires", expiry ? expiry + " (" + age((Date.parse(expiry) - now) / 1000) + ")" : "-"]);
    rows.push(["last event", p.last_event_age_s === null || p.last_event_age_s === undefined
      ? (p.events_total ? "over " + age(s.window_s) + " ago" : "none yet") : age(p.last_event_age_s) + " ago"]);
    rows.push(["events/s (1 min)", p.events_per_s === null || p.events_per_s === undefined ? "measuring" : p.events_per_s]);
    rows.push(["events published", p.events_total || 0]);
    if (link.timezone_warning) rows.push(["PBX clock", SYMBOL.warn + " " + link.timezone_warning, "warn"]);
    const dl = el("dl");
    pairs(dl, rows);
    card.append(title, badge, dl);
    cards.append(card);
  }

  const b = s.bus || {};
  const bk = b.connected ? "ok" : "bad";
  pairs(document.getElementById("broker"), [
    ["state", (b.connected ? SYMBOL.ok + " connected" : SYMBOL.bad + " not connected") + " since " + since(b.since, now), bk],
    ...(b.error ? [["why", b.error, "bad"]] : []),
    ["url", b.url || "-"],
    ["unconfirmed", b.backlog],
    ["outbox depth", b.outbox_events, b.outbox_events ? "warn" : ""],
    ["oldest in outbox", b.outbox_events ? age(b.outbox_oldest_age_s) : "-", b.outbox_oldest_age_s > 300 ? "bad" : ""],
  ]);
  const c = s.commands || {};
  const failures = Object.entries(c.failures_by_code || {});
  pairs(document.getElementById("commands"), [
    ["per minute (1 min)", c.per_min === null || c.per_min === undefined ? "measuring" : c.per_min],
    ["answered", c.total || 0],
    ["failures by code", failures.length ? failures.map(([code, n]) => code + ": " + n).join(", ") : "none"],
  ]);
  const g = s.config || {};
  const last = g.last_reload;
  const lastRows = !last ? [["last reload", "none since start"]] : [
    ["last reload", (last.ok ? SYMBOL.ok + " applied " : SYMBOL.bad + " FAILED ") + since(last.at, now), last.ok ? "ok" : "bad"],
    ...(last.error ? [["why", last.error + " (the previous configuration keeps running)", "bad"]] : []),
    ...(last.changes ? [["changes", "added " + last.changes.added.length + ", removed " + last.changes.removed.length + ", changed " + last.changes.changed.length]] : []),
  ];
  pairs(document.getElementById("config"), [
    ["generation", g.generation === undefined ? "-" : g.generation],
    ["file", g.file || "none (no reload)"],
    ["applied", g.loaded_at ? since(g.loaded_at, now) : "-"],
    ...lastRows,
  ]);
  const rows = document.getElementById("errors");
  rows.replaceChildren();
  if (!(s.errors || []).length) {
    const tr = el("tr"); const td = el("td", "none", "muted"); td.colSpan = 5; tr.append(td); rows.append(tr);
  }
  for (const e of s.errors || []) {
    const tr = el("tr");
    tr.append(el("td", (e.timestamp || "").replace("T", " ").slice(0, 19)),
              el("td", e.level, e.level === "warning" ? "warn" : "bad"),
              el("td", e.event), el("td", e.tenant || "-"), el("td", e.detail || ""));
    rows.append(tr);
  }
}
async function refresh() {
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("stale").className = "";
    document.body.dataset.loaded = "yes";
  } catch (err) {
    document.getElementById("stale").className = "bad on";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
