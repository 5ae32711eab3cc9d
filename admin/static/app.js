// nsqadmin's dashboard: a small single-page app over the JSON API. Each view
// loads its data, draws it into #main, and is drawn again every few seconds
// (the pages are live). Charts are plain SVG from /api/history, which the
// server samples for the last hour.
"use strict";

(function () {
  const CFG = window.NSQADMIN || { base_path: "", is_admin: true, lookupd: true, interval_ms: 10000 };
  const BASE = CFG.base_path || "";
  const REFRESH_MS = 2000;
  const main = document.getElementById("main");
  const flashBox = document.getElementById("flash");
  const liveBadge = document.getElementById("live");

  // ---- rendering ---------------------------------------------------------
  //
  // Every string a node, lookupd or user sent is hostile (a rogue node can
  // register with lookupd). So markup is written only through the `html`
  // tag: each value put into a template is escaped, unless it is itself
  // the result of `html` (or an array of them). Pages never build markup
  // by string concatenation; `esc` is used by nothing but `html`.

  class Html {
    constructor(s) { this.s = s; }
    toString() { return this.s; }
  }
  const esc = (v) => String(v == null ? "" : v).replace(/[&<>"'`]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;" }[c]));
  const part = (v) => (v instanceof Html ? v.s : Array.isArray(v) ? v.map(part).join("") : esc(v));
  function html(strings, ...values) {
    let out = strings[0];
    values.forEach((v, i) => { out += part(v) + strings[i + 1]; });
    return new Html(out);
  }
  const none = (list) => !list || list.length === 0;
  const enc = encodeURIComponent;
  const num = (n) => (n == null ? "" : Number(n).toLocaleString("en-US"));
  const rate = (r) => (r == null ? "–" : r >= 100 ? Math.round(r).toLocaleString("en-US") : (Math.round(r * 10) / 10).toString());
  const link = (path, text) => html`<a href="${BASE + path}" data-link>${text}</a>`;
  const topicPath = (t) => `/topics/${enc(t)}`;
  const channelPath = (t, c) => `/topics/${enc(t)}/${enc(c)}`;
  const nodePath = (n) => `/nodes/${enc(n)}`;

  class ApiError extends Error {}

  async function api(method, path, body) {
    const opts = { method, headers: { Accept: "application/vnd.nsq; version=1.0" } };
    if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(BASE + path, opts);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = data && data.message ? data.message : `${resp.status} ${resp.statusText}`;
      const err = new ApiError(msg);
      err.status = resp.status;
      throw err;
    }
    return data || {};
  }

  function flash(text, isError) {
    flashBox.innerHTML = part(html`<div class="${isError ? "msg error" : "msg"}" id="flash-msg">${text}</div>`);
  }

  function warningBox(message) {
    return message ? html`<div class="warning" id="warning">${message}</div>` : "";
  }

  function ago(ts) {
    let s = Math.max(0, Math.floor(Date.now() / 1000 - ts));
    const parts = [];
    for (const [unit, len] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= len) { parts.push(Math.floor(s / len) + unit); s %= len; }
    }
    parts.push(s + "s");
    return parts.slice(0, 2).join(" ");
  }

  // Rates between two polls, for rows that have no server-side history
  // (per node): messages per second since this page last saw the counter.
  const lastCounts = new Map();
  function rateOf(key, count) {
    const now = Date.now();
    const prev = lastCounts.get(key);
    lastCounts.set(key, { count, now });
    if (!prev || now <= prev.now || count < prev.count) return null;
    return ((count - prev.count) * 1000) / (now - prev.now);
  }

  // ---- confirmation and actions -----------------------------------------

  const modal = document.getElementById("confirm");
  let pending = null;
  function confirmThen(text, run) {
    document.getElementById("confirm-text").textContent = text;
    pending = run;
    modal.hidden = false;
    document.getElementById("confirm-ok").focus();
  }
  document.getElementById("confirm-cancel").addEventListener("click", () => { modal.hidden = true; pending = null; });
  document.getElementById("confirm-ok").addEventListener("click", async () => {
    const run = pending;
    modal.hidden = true;
    pending = null;
    if (run) await run();
  });

  async function act(describe, method, path, body, after) {
    try {
      const r = await api(method, path, body);
      flash(r.message ? `${describe}: ${r.message}` : `${describe}: done`, Boolean(r.message));
      if (after) after(); else refresh();
    } catch (e) {
      flash(`${describe} failed: ${e.message}`, true);
    }
  }

  // Buttons carry what they do: data-confirm (question), data-method,
  // data-path, data-body (JSON), data-describe, data-after (a page path).
  main.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-path]");
    if (!b) return;
    ev.preventDefault();
    const body = b.dataset.body ? JSON.parse(b.dataset.body) : undefined;
    const after = b.dataset.after ? () => go(b.dataset.after) : null;
    confirmThen(b.dataset.confirm, () => act(b.dataset.describe, b.dataset.method, b.dataset.path, body, after));
  });

  const ATTRS = ["confirm", "method", "path", "body", "describe", "after"];
  function button(id, label, cls, attrs) {
    if (!CFG.is_admin) return "";
    const data = ATTRS.filter((k) => attrs[k] !== undefined).map((k) => html` data-${k}="${attrs[k]}"`);
    return html`<button type="button" id="${id}" class="${cls}"${data}>${label}</button>`;
  }

  const pausedBadge = (paused, id) => (paused ? (id ? html`<span class="badge paused" id="${id}">paused</span>` : html`<span class="badge paused">paused</span>`) : "");

  function pauseButtons(kind, paused, path, name) {
    const verb = paused ? "unpause" : "pause";
    return [
      button(`btn-${verb}`, paused ? "Unpause" : "Pause", paused ? "" : "warn", {
        confirm: `${paused ? "Unpause" : "Pause"} ${kind} ${name}?`, method: "POST", path,
        body: JSON.stringify({ action: verb }), describe: `${verb} ${kind} ${name}`,
      }),
      button("btn-empty", "Empty", "warn", {
        confirm: `Empty ${kind} ${name}? Every queued message is deleted.`, method: "POST", path,
        body: JSON.stringify({ action: "empty" }), describe: `empty ${kind} ${name}`,
      }),
    ];
  }

  // ---- charts ------------------------------------------------------------

  function chart(title, points, key, unit) {
    const W = 600, H = 140, L = 44, B = 18, T = 6;
    const val = (p) => Number(p[key]) || 0;
    const last = points.length ? points[points.length - 1][key] : null;
    const head = html`<div class="title"><span>${title}</span><span>${last == null ? "no samples yet" : `${rate(last)} ${unit}`}</span></div>`;
    if (points.length < 2) {
      return html`<div class="chart" data-chart="${key}">${head}<svg viewBox="0 0 ${W} ${H}"><text x="${W / 2}" y="${H / 2}" text-anchor="middle">collecting samples every ${Math.round(CFG.interval_ms / 100) / 10}s…</text></svg></div>`;
    }
    const t0 = Number(points[0].ts) || 0, t1 = Number(points[points.length - 1].ts) || 0;
    let max = 0;
    for (const p of points) max = Math.max(max, val(p));
    if (max <= 0) max = 1;
    const x = (t) => L + (((Number(t) || 0) - t0) / Math.max(1, t1 - t0)) * (W - L - 4);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const line = points.map((p, i) => `${i ? "L" : "M"}${x(p.ts).toFixed(1)},${y(val(p)).toFixed(1)}`).join("");
    const area = `${line}L${x(t1).toFixed(1)},${H - B}L${L},${H - B}Z`;
    const mins = Math.round((t1 - t0) / 60000);
    const span = mins >= 1 ? `${mins} min` : `${Math.round((t1 - t0) / 1000)} s`;
    return html`<div class="chart" data-chart="${key}">${head}<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">
      <line class="axis" x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${W}" y2="${T}"/>
      <text x="${L - 4}" y="${T + 8}" text-anchor="end">${rate(max)}</text><text x="${L - 4}" y="${H - B}" text-anchor="end">0</text>
      <text x="${L}" y="${H - 4}">-${span}</text><text x="${W - 4}" y="${H - 4}" text-anchor="end">now</text>
      <path class="area" d="${area}"/><path class="line" d="${line}"/></svg></div>`;
  }

  function charts(history) {
    const pts = history.points || [];
    return html`<div class="charts">${chart("message rate", pts, "rate", "msg/s")}${chart("depth", pts, "depth", "msgs")}${chart("in flight", pts, "in_flight", "msgs")}</div>`;
  }

  // ---- views ---------------------------------------------------------------

  function unreachable(lines) {
    return lines.length ? html`<div class="warning" id="unreachable">${lines.join("\n")}</div>` : "";
  }

  function healthWarnings(live) {
    const down = (live.nodes || []).filter((n) => !n.reachable).map((n) => `nsqd ${n.address} unreachable: ${n.error}`);
    const lk = (live.lookupds || []).filter((n) => !n.reachable).map((n) => `nsqlookupd ${n.address} unreachable: ${n.error}`);
    return unreachable(down.concat(lk));
  }

  const orEmpty = (rows, cols, text) => (none(rows) ? html`<tr><td colspan="${cols}" class="muted">${text}</td></tr>` : rows);

  async function viewTopics() {
    const [topics, live] = await Promise.all([api("GET", "/api/topics"), api("GET", "/api/live").catch(() => ({}))]);
    const byName = new Map((live.topics || []).map((t) => [t.topic_name, t]));
    const rows = (topics.topics || []).map((name) => {
      const t = byName.get(name);
      return html`<tr data-topic="${name}"><td>${link(topicPath(name), name)}</td>
        <td>${t ? num(t.depth) : "…"}</td><td>${t ? num(t.channel_depth) : "…"}</td><td>${t ? num(t.in_flight_count) : "…"}</td>
        <td>${t ? rate(t.rate) : "…"}</td><td>${t ? num(t.message_count) : "…"}</td><td>${t ? num(t.channel_count) : "…"}</td></tr>`;
    });
    return html`<h1>Topics</h1>${warningBox(topics.message)}${healthWarnings(live)}
      <table id="topics"><thead><tr><th>Topic</th><th>Topic depth</th><th>Channel depth</th><th>In flight</th><th>Rate (msg/s)</th><th>Messages</th><th>Channels</th></tr></thead>
      <tbody>${orEmpty(rows, 7, "No topics.")}</tbody></table>
      <p class="muted">Figures from the last sample (every ${Math.round(CFG.interval_ms / 100) / 10}s); rate over the last interval.</p>`;
  }

  function inFlight(t) { return (t.channels || []).reduce((s, c) => s + c.in_flight_count, 0); }
  function deferred(t) { return (t.channels || []).reduce((s, c) => s + c.deferred_count, 0); }
  function conns(t) { return (t.channels || []).reduce((s, c) => s + c.client_count, 0); }

  const nodeLabel = (n) => html`${link(nodePath(n.node), n.hostname ? `${n.hostname} (${n.node})` : n.node)}${pausedBadge(n.paused)}`;

  async function viewTopic(topic) {
    const [t, hist] = await Promise.all([api("GET", `/api/topics/${enc(topic)}`), api("GET", `/api/history/topics/${enc(topic)}`)]);
    const path = `/api/topics/${enc(topic)}`;
    const row = (n, label, key) => html`<tr class="${key === "total" ? "total" : ""}"><td>${label}</td><td>${num(n.depth)}</td><td>${num(n.memory_depth)} + ${num(n.backend_depth)}</td>
      <td>${num(inFlight(n))}</td><td>${num(deferred(n))}</td><td>${num(n.message_count)}</td><td>${rate(rateOf("t:" + topic + ":" + key, n.message_count))}</td><td>${num(conns(n))}</td></tr>`;
    const nodes = (t.nodes || []).map((n) => row(n, nodeLabel(n), n.node));
    const channels = (t.channels || []).map((c) => html`<tr data-channel="${c.channel_name}"><td>${link(channelPath(topic, c.channel_name), c.channel_name)}${pausedBadge(c.paused)}</td>
      <td>${num(c.depth)}</td><td>${num(c.memory_depth)} + ${num(c.backend_depth)}</td><td>${num(c.in_flight_count)}</td><td>${num(c.deferred_count)}</td>
      <td>${num(c.requeue_count)}</td><td>${num(c.timeout_count)}</td><td>${num(c.message_count)}</td><td>${rate(rateOf("c:" + topic + ":" + c.channel_name, c.message_count))}</td><td>${num(c.client_count)}</td></tr>`);
    return html`<h1>Topic <span id="topic-name">${topic}</span>${pausedBadge(t.paused, "paused")}</h1>
      ${warningBox(t.message)}
      <div class="actions">${pauseButtons("topic", t.paused, path, topic)}${button("btn-delete", "Delete topic", "danger", {
        confirm: `Delete topic ${topic} and all its channels on every node?`, method: "DELETE", path, describe: `delete topic ${topic}`, after: "/" })}</div>
      ${charts(hist)}
      <h2>Per node</h2>
      <table id="nodes"><thead><tr><th>Node</th><th>Depth</th><th>Memory + disk</th><th>In flight</th><th>Deferred</th><th>Messages</th><th>Rate</th><th>Connections</th></tr></thead>
      <tbody>${nodes}${row(t, "Total", "total")}</tbody></table>
      <h2>Channels</h2>
      <table id="channels"><thead><tr><th>Channel</th><th>Depth</th><th>Memory + disk</th><th>In flight</th><th>Deferred</th><th>Requeued</th><th>Timed out</th><th>Messages</th><th>Rate</th><th>Connections</th></tr></thead>
      <tbody>${orEmpty(channels, 10, "No channels.")}</tbody></table>`;
  }

  async function viewChannel(topic, channel) {
    const [c, hist] = await Promise.all([api("GET", `/api/topics/${enc(topic)}/${enc(channel)}`), api("GET", `/api/history/topics/${enc(topic)}/${enc(channel)}`)]);
    const path = `/api/topics/${enc(topic)}/${enc(channel)}`;
    const row = (n, label, key) => html`<tr class="${key === "total" ? "total" : ""}"><td>${label}</td><td>${num(n.depth)}</td><td>${num(n.memory_depth)} + ${num(n.backend_depth)}</td>
      <td>${num(n.in_flight_count)}</td><td>${num(n.deferred_count)}</td><td>${num(n.requeue_count)}</td><td>${num(n.timeout_count)}</td><td>${num(n.message_count)}</td>
      <td>${rate(rateOf("c:" + topic + ":" + channel + ":" + key, n.message_count))}</td><td>${num(n.client_count)}</td></tr>`;
    const nodes = (c.nodes || []).map((n) => row(n, nodeLabel(n), n.node));
    const clients = (c.clients || []).map((cl) => {
      const feats = [cl.tls ? `TLS ${cl.tls_version}` : "", cl.snappy ? "snappy" : "", cl.deflate ? "deflate" : "", cl.sample_rate ? `sampled ${cl.sample_rate}%` : "", cl.authed ? `authed ${cl.auth_identity}` : ""].filter(Boolean).join(", ");
      const since = new Date((Number(cl.connect_ts) || 0) * 1000);
      return html`<tr><td>${cl.hostname}<div class="muted">${cl.remote_address} via ${link(nodePath(cl.node), cl.node)}</div></td><td class="text">${cl.client_id}</td>
        <td class="text">${cl.user_agent || ""}</td><td class="text">${cl.version}</td><td class="text">${feats || "–"}</td>
        <td>${num(cl.ready_count)}</td><td>${num(cl.in_flight_count)}</td><td>${num(cl.finish_count)}</td><td>${num(cl.requeue_count)}</td><td>${num(cl.message_count)}</td>
        <td title="${since.toISOString()}">${since.toLocaleString()}<div class="muted">${ago(cl.connect_ts)}</div></td></tr>`;
    });
    return html`<h1>${link(topicPath(topic), topic)} / <span id="channel-name">${channel}</span>${pausedBadge(c.paused, "paused")}</h1>
      ${warningBox(c.message)}
      <div class="actions">${pauseButtons("channel", c.paused, path, channel)}${button("btn-delete", "Delete channel", "danger", {
        confirm: `Delete channel ${channel} of ${topic} on every node?`, method: "DELETE", path, describe: `delete channel ${channel}`, after: topicPath(topic) })}</div>
      ${charts(hist)}
      <h2>Per node</h2>
      <table id="nodes"><thead><tr><th>Node</th><th>Depth</th><th>Memory + disk</th><th>In flight</th><th>Deferred</th><th>Requeued</th><th>Timed out</th><th>Messages</th><th>Rate</th><th>Connections</th></tr></thead>
      <tbody>${nodes}${row(c, "Total", "total")}</tbody></table>
      <h2>Clients</h2>
      <table id="clients"><thead><tr><th>Host</th><th class="text">Client ID</th><th class="text">User agent</th><th class="text">Protocol</th><th class="text">TLS / compression</th>
        <th>RDY</th><th>In flight</th><th>Finished</th><th>Requeued</th><th>Messages</th><th>Connected</th></tr></thead>
      <tbody>${orEmpty(clients, 11, "No clients.")}</tbody></table>`;
  }

  async function viewNodes() {
    const [r, live] = await Promise.all([api("GET", "/api/nodes"), api("GET", "/api/live").catch(() => ({}))]);
    const health = new Map((live.nodes || []).map((h) => [h.address, h]));
    const rows = (r.nodes || []).map((n) => {
      const addr = `${n.broadcast_address}:${n.http_port}`;
      const h = health.get(addr);
      const status = !h ? html`<span class="badge">checking</span>` : h.reachable ? html`<span class="badge ok">up</span>` : html`<span class="badge bad" title="${h.error}">unreachable</span>`;
      return html`<tr data-node="${addr}"><td>${link(nodePath(addr), n.hostname || addr)}</td><td class="text">${n.broadcast_address}</td><td>${n.tcp_port}</td><td>${n.http_port}</td>
        <td class="text">${n.version}${n.out_of_date ? html`<span class="badge bad">out of date</span>` : ""}</td><td>${num((n.topics || []).length)}</td>
        <td class="text">${(n.remote_addresses || []).join(", ")}</td><td class="text">${status}</td></tr>`;
    });
    return html`<h1>Nodes</h1>${warningBox(r.message)}${healthWarnings(live)}
      <table id="nodes"><thead><tr><th>Hostname</th><th class="text">Broadcast address</th><th>TCP port</th><th>HTTP port</th><th class="text">Version</th><th>Topics</th><th class="text">Lookupd connections</th><th class="text">Status</th></tr></thead>
      <tbody>${orEmpty(rows, 8, "No nodes.")}</tbody></table>`;
  }

  async function viewNode(node) {
    const r = await api("GET", `/api/nodes/${enc(node)}`);
    const rows = (r.topics || []).map((t) => {
      const tomb = CFG.lookupd ? button(`btn-tombstone-${t.topic_name}`, "Tombstone", "warn", {
        confirm: `Tombstone topic ${t.topic_name} on ${node}? Lookupd stops listing this node for it and the node deletes it.`,
        method: "DELETE", path: `/api/nodes/${enc(node)}`, body: JSON.stringify({ topic: t.topic_name }), describe: `tombstone ${t.topic_name} on ${node}` }) : "";
      const chans = (t.channels || []).map((c) => html`<tr class="sub"><td>&nbsp;&nbsp;↳ ${link(channelPath(t.topic_name, c.channel_name), c.channel_name)}${pausedBadge(c.paused)}</td>
        <td>${num(c.depth)}</td><td>${num(c.memory_depth)} + ${num(c.backend_depth)}</td><td>${num(c.in_flight_count)}</td><td>${num(c.deferred_count)}</td><td>${num(c.message_count)}</td><td>${num((c.clients || []).length)}</td><td></td></tr>`);
      return html`<tr data-topic="${t.topic_name}"><td>${link(topicPath(t.topic_name), t.topic_name)}${pausedBadge(t.paused)}</td><td>${num(t.depth)}</td><td>${num(t.memory_depth)} + ${num(t.backend_depth)}</td>
        <td>${num(inFlight(t))}</td><td>${num(deferred(t))}</td><td>${num(t.message_count)}</td><td>${num(conns(t))}</td><td>${tomb}</td></tr>${chans}`;
    });
    const peers = r.replicas ? html`<h2>Replication peers</h2><table id="replicas"><thead><tr><th class="text">Peer</th><th class="text">State</th><th>Lag (messages)</th><th>Lag (bytes)</th><th>Shadow depth</th><th>Takeovers</th></tr></thead>
      <tbody>${orEmpty(r.replicas.map((p) => html`<tr data-peer="${p.peer}"><td class="text">${p.peer}</td><td class="text"><span class="badge ${p.state === "in_sync" ? "" : "bad"}">${p.state}</span></td>
        <td>${num(p.lag_messages)}</td><td>${num(p.lag_bytes)}</td><td>${num(p.shadow_depth)}</td><td>${num(p.takeovers)}</td></tr>`), 6, "No peers.")}</tbody></table>` : "";
    return html`<h1>Node <span id="node-name">${node}</span></h1>${warningBox(r.message)}
      <p>${num(r.total_messages)} messages, ${num(r.total_clients)} clients, ${num((r.topics || []).length)} topics.</p>${peers}
      <table id="topics"><thead><tr><th>Topic / channel</th><th>Depth</th><th>Memory + disk</th><th>In flight</th><th>Deferred</th><th>Messages</th><th>Connections</th><th></th></tr></thead>
      <tbody>${orEmpty(rows, 8, "No topics.")}</tbody></table>`;
  }

  async function viewLookup() {
    const r = CFG.lookupd ? await api("GET", "/api/topics?inactive=true") : { topics: {}, message: "" };
    const rows = Object.entries(r.topics || {}).map(([t, chans]) => html`<tr><td>${t}</td><td class="text">${(chans || []).map((c) =>
      html`${c} ${button(`btn-delete-${t}-${c}`, "Delete", "", { confirm: `Delete channel ${c} of ${t} from lookupd?`, method: "DELETE", path: `/api/topics/${enc(t)}/${enc(c)}`, describe: `delete channel ${c}` })} `)}</td>
      <td>${button(`btn-delete-${t}`, "Delete topic", "danger", { confirm: `Delete topic ${t} from lookupd?`, method: "DELETE", path: `/api/topics/${enc(t)}`, describe: `delete topic ${t}` })}</td></tr>`);
    const form = CFG.is_admin ? html`<h2>Create a topic or channel</h2><form class="create" id="create-form"><input name="topic" placeholder="topic" required>
      <input name="channel" placeholder="channel (optional)"><button type="submit">Create</button></form>` : "";
    return html`<h1>Lookup</h1>${warningBox(r.message)}
      ${CFG.lookupd ? html`<p class="muted">Topics lookupd knows that no nsqd produces.</p><table id="inactive"><thead><tr><th>Topic</th><th class="text">Channels</th><th></th></tr></thead>
      <tbody>${orEmpty(rows, 3, "None.")}</tbody></table>` : html`<p class="muted">No lookupd configured (--nsqd-http-address mode).</p>`}${form}`;
  }

  // Jobs: every job channel of every nsqd (GET /api/jobs), per node its
  // workers (load / capacity) and each fire's shards; dead letters waiting in
  // the dead-letter topic can be moved back to the job topic.
  async function viewJobs() {
    const r = await api("GET", "/api/jobs");
    const health = unreachable((r.nodes || []).filter((n) => !n.reachable).map((n) => `nsqd ${n.node} unreachable: ${n.error}`));
    const jobs = (r.jobs || []).map((j) => {
      const requeue = j.dead_letters > 0 ? button(`btn-requeue-${j.job}`, `Requeue ${j.dead_letters} dead`, "warn", {
        confirm: `Move the ${j.dead_letters} dead letters of ${j.dead_letter_topic} back to job ${j.job}? Their shards run again.`,
        method: "POST", path: `/api/jobs/${enc(j.job)}`, body: JSON.stringify({ action: "requeue", channel: j.channel }),
        describe: `requeue dead letters of ${j.job}` }) : "";
      const nodes = (j.nodes || []).map((n) => {
        const workers = (n.workers || []).map((w) => html`<tr><td class="text">${w.worker}<div class="muted">${w.remote_address}</div></td>
          <td>${num(w.load)} / ${num(w.capacity)}</td><td>${num(w.total_load)}</td><td>${num(w.shards_taken)}</td></tr>`);
        const fires = (n.fires || []).map((f) => {
          const shards = (f.shards || []).map((s) => html`<tr class="sub" data-shard="${f.fire}:${s.item}"><td>&nbsp;&nbsp;↳ shard ${s.item}${s.param ? ` (${s.param})` : ""}</td><td>${num(s.load)}</td>
            <td class="text"><span class="badge state-${s.state}">${s.state}</span>${s.worker ? ` on ${s.worker}` : ""}</td><td>${num(s.attempts)}</td></tr>`);
          return html`<tr data-fire="${f.fire}"><td>fire ${f.fire}</td><td></td><td class="text">${num(f.pending)} pending, ${num(f.running)} running, ${num(f.failed)} failed, ${num(f.done)} done, ${num(f.dead)} dead</td><td></td></tr>${shards}`;
        });
        const settle = n.settling ? html`<span class="badge paused">settling ${Math.ceil(n.settle_remaining_ms / 1000)}s, ${num((n.workers || []).length)}/${num(n.min_workers)} workers</span>` : "";
        return html`<h3>${link(nodePath(n.node), n.node)} ${settle}</h3>
          <p class="muted">${num(n.pending_on_disk)} shards on disk not yet read, ${num(n.other_messages)} other messages, ${num(n.dead_letters)} dead letters in ${n.dead_letter_topic}</p>
          <table class="workers"><thead><tr><th class="text">Worker</th><th>Load / capacity</th><th>Load on this nsqd</th><th>Shards taken</th></tr></thead>
          <tbody>${orEmpty(workers, 4, "No workers.")}</tbody></table>
          <table class="fires"><thead><tr><th>Fire / shard</th><th>Load</th><th class="text">State</th><th>Attempts</th></tr></thead>
          <tbody>${orEmpty(fires, 4, "No fires remembered.")}</tbody></table>`;
      });
      return html`<section class="job" data-job="${j.job}"><h2>${link(topicPath(j.job), j.job)} / ${link(channelPath(j.job, j.channel), j.channel)}</h2>
        <p>${num(j.pending)} pending, ${num(j.running)} running, ${num(j.failed)} failed, ${num(j.done)} done, ${num(j.dead)} dead · load ${num(j.load)} / ${num(j.capacity)} ·
        ${num(j.dead_letters)} dead letters in ${link(topicPath(j.dead_letter_topic), j.dead_letter_topic)}</p>
        <div class="actions">${requeue}</div>${nodes}</section>`;
    });
    return html`<h1>Jobs</h1>${warningBox(r.message)}${health}${none(jobs) ? html`<p class="muted" id="no-jobs">No job channels (a channel becomes one when shards arrive or a worker declares a capacity).</p>` : jobs}`;
  }

  main.addEventListener("submit", (ev) => {
    if (ev.target.id !== "create-form") return;
    ev.preventDefault();
    const f = new FormData(ev.target);
    const topic = String(f.get("topic") || "").trim(), channel = String(f.get("channel") || "").trim();
    const what = channel ? `channel ${channel} of topic ${topic}` : `topic ${topic}`;
    confirmThen(`Create ${what}?`, () => act(`create ${what}`, "POST", "/api/topics", { topic, channel }));
  });

  let counterLast = null;
  async function viewCounter() {
    const r = await api("GET", "/api/counter");
    const total = Object.values(r.stats || {}).reduce((s, v) => s + v.message_count, 0);
    const now = Date.now();
    let perSec = null;
    if (counterLast && now > counterLast.now && total >= counterLast.total) perSec = ((total - counterLast.total) * 1000) / (now - counterLast.now);
    counterLast = { total, now };
    return html`<h1>Messages processed</h1>${warningBox(r.message)}<div class="counter" id="counter">${num(total)}</div>
      <p class="muted">${perSec == null ? "measuring…" : rate(perSec) + " msg/s"} · summed over every channel of every node</p>`;
  }

  // ---- routing and refresh ---------------------------------------------------

  function current() {
    let p = location.pathname;
    if (BASE && p.startsWith(BASE)) p = p.slice(BASE.length);
    const s = p.split("/").filter(Boolean).map(decodeURIComponent);
    if (s.length === 0 || (s[0] === "topics" && s.length === 1)) return viewTopics;
    if (s[0] === "topics" && s.length === 2) return () => viewTopic(s[1]);
    if (s[0] === "topics" && s.length === 3) return () => viewChannel(s[1], s[2]);
    if (s[0] === "nodes" && s.length === 1) return viewNodes;
    if (s[0] === "nodes" && s.length === 2) return () => viewNode(s[1]);
    if (s[0] === "lookup") return viewLookup;
    if (s[0] === "counter") return viewCounter;
    if (s[0] === "jobs" && s.length === 1) return viewJobs;
    return async () => html`<h1>Not found</h1>`;
  }

  let generation = 0;
  let busy = false;
  async function refresh() {
    // Keep the page still while a question is open, or a form is being typed in.
    if (!modal.hidden || busy) return;
    const active = document.activeElement;
    if (active && active.closest && active.closest("form") && main.contains(active)) return;
    busy = true;
    const mine = generation;
    try {
      const page = await current()();
      if (mine === generation) main.innerHTML = part(page);
      liveBadge.className = "";
      liveBadge.textContent = "live · " + new Date().toLocaleTimeString();
    } catch (e) {
      const explain = { TOPIC_NOT_FOUND: "No nsqd has this topic (any more).", CHANNEL_NOT_FOUND: "No nsqd has this channel (any more).", NODE_NOT_FOUND: "No such node is known to the cluster." }[e.message];
      if (mine === generation) main.innerHTML = part(html`<h1>Error</h1><div class="warning" id="error">${explain ? `${explain} (${e.message})` : e.message}</div>`);
      liveBadge.className = "stale";
      liveBadge.textContent = "error";
    } finally {
      busy = false;
    }
  }

  function go(path) {
    history.pushState(null, "", BASE + path);
    generation++;
    lastCounts.clear();
    flashBox.innerHTML = "";
    busy = false;
    refresh();
  }

  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-link]");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    const url = new URL(a.href);
    go(url.pathname.slice(BASE.length) || "/");
  });
  window.addEventListener("popstate", () => { generation++; lastCounts.clear(); refresh(); });

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
