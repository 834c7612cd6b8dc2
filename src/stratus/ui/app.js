// The Stratus dashboard: polls the /api routes and draws the list and a deployment's page.
// Text from the server is only ever set with textContent, never parsed as HTML.
"use strict";

const KEY = "stratus.apiKey"; // only where the browser refused the session cookie (see signIn)
const NAMESPACE = "stratus.namespace";
const NEXT_PAGES = ["/docs", "/redoc"]; // where a sign-in may send the browser back to
const LIST_EVERY_MS = 2000;
const DETAIL_EVERY_MS = 1000;
const SLOW_EVERY_MS = 3000; // logs, traffic and alerts change less often
const WINDOW_S = 300;
const COLORS = { concurrency: "#f59e0b", ready: "#2563eb", starting: "#93c5fd",
                 desired: "#64748b", p50: "#10b981", p99: "#ef4444", rps: "#2563eb", errors: "#ef4444" };

const $ = (id) => document.getElementById(id);
let timer = null;
let slowTimer = null;
let charts = {};
let generation = 0; // bumped on every navigation so stale answers are dropped
let target = 1; // the autoscaler's target concurrency per replica: one replica's share
let signedIn = false; // by the session cookie (HTTP-only: the page cannot read it) or a kept key

// -- API --------------------------------------------------------------------------------
class Unauthorized extends Error {}
class NotFound extends Error {}

function apiHeaders() {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const namespace = sessionStorage.getItem(NAMESPACE);
  if (namespace) headers["X-Stratus-Namespace"] = namespace;
  return headers;
}

async function errorMessage(response, fallback) {
  try { return (await response.json()).error.message || fallback; } catch { return fallback; }
}

async function api(path, { text = false, optional = false } = {}) {
  const response = await fetch(path, { headers: apiHeaders(), credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized(await errorMessage(response, "signed out"));
  if (optional && (response.status === 404 || response.status === 405)) return null;
  if (response.status === 404) throw new NotFound(await errorMessage(response, `${path} not found`));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return text ? response.text() : response.json();
}

// Sign-in: the server checks the key and sets the session cookie. A browser that will not keep
// a Secure cookie (plain HTTP on a host other than localhost) gets the key kept in this tab's
// session storage instead, as a bearer token; the API docs then need HTTPS.
async function signIn(key) {
  const response = await fetch("/api/session", {
    method: "POST", headers: { Authorization: `Bearer ${key}` }, credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(response.status === 401 ? "The API key was refused."
      : await errorMessage(response, `Sign-in failed (HTTP ${response.status}).`));
  }
  const kept = await fetch("/api/session", { credentials: "same-origin" });
  if (kept.ok) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, key);
  signedIn = true;
}

async function signOut() {
  sessionStorage.removeItem(KEY);
  signedIn = false;
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin" }).catch(() => null);
}

function nextPage() {
  const next = new URLSearchParams(location.search).get("next");
  return NEXT_PAGES.includes(next) ? next : null;
}

// -- formatting -------------------------------------------------------------------------
const dash = "–";
const ms = (v) => (v == null ? dash : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 2 : 0)} ms`);
const num = (v, digits = 1) => (v == null ? dash : Number(v).toFixed(digits));
const pct = (v) => (v == null ? dash : `${(v * 100).toFixed(v < 0.01 && v > 0 ? 2 : 1)}%`);
let currency = "USD";
const money = (v) => (v == null ? dash : `${Number(v).toFixed(Number(v) < 1 ? 4 : 2)} ${currency}`);
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function setText(id, value) {
  const node = $(id);
  if (node.textContent !== String(value)) node.textContent = value;
}

// -- navigation -------------------------------------------------------------------------
function stop() {
  clearInterval(timer);
  clearInterval(slowTimer);
  for (const chart of Object.values(charts)) chart.destroy();
  charts = {};
  generation += 1;
}

function show(view) {
  for (const id of ["login", "not-found", "list-view", "detail-view", "workflows-view",
    "execution-view", "jobs-view", "job-view"]) {
    $(id).hidden = id !== view;
  }
  $("sign-out").hidden = view === "login";
}

function crumbs(name) {
  const nav = $("crumbs");
  nav.replaceChildren(el("a", { href: "#/" }, "Deployments"));
  if (name) nav.append(" / ", el("span", {}, name));
}

function route() {
  stop();
  if (!signedIn) {
    crumbs(null);
    show("login");
    $("api-key").focus();
    return;
  }
  const match = location.hash.match(/^#\/d\/([^/]+)$/);
  const execution = location.hash.match(/^#\/x\/([^/]+)$/); // workflows.js
  const job = location.hash.match(/^#\/j\/([^/]+)$/); // jobs.js
  if (match) openDeployment(decodeURIComponent(match[1]));
  else if (execution) openExecution(decodeURIComponent(execution[1]));
  else if (job) openJob(decodeURIComponent(job[1]));
  else if (location.hash === "#/workflows") openWorkflows();
  else if (location.hash === "#/jobs") openJobs();
  else openList();
}

async function guarded(work) {
  try {
    await work();
    setText("updated", `updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      signedIn = false;
      $("login-error").textContent = `Signed out: ${error.message}.`;
      route();
    } else if (error instanceof NotFound) {
      showNotFound(error.message);
    } else {
      setText("updated", `error: ${error.message}`);
    }
  }
}

// Whatever was asked for is not there (a deployment, a job, an execution): say so, and show
// nothing of the page that was open before.
function showNotFound(message) {
  stop();
  setText("nf-message", message);
  show("not-found");
  setText("updated", "");
}

// -- the list -----------------------------------------------------------------------------
function costByDeployment(usage) {
  // GET /api/usage?by=deployment (last 24 h): what each deployment spent serverlessly, its
  // invocations plus idle replica-seconds. No route, or no metering, leaves "–".
  const costs = new Map();
  for (const group of (usage && Array.isArray(usage.groups)) ? usage.groups : []) {
    const cost = group.cost && typeof group.cost === "object" ? group.cost.serverless : group.cost;
    if (group.deployment != null && typeof cost === "number") costs.set(String(group.deployment), cost);
  }
  return costs;
}

function replicaCell(replicas) {
  const cell = el("td", { class: "replicas", "data-ready": replicas.ready });
  cell.append(
    el("span", { class: "count ready", title: "ready" }, replicas.ready),
    el("span", { class: "count starting", title: "starting" }, replicas.starting),
    el("span", { class: "count draining", title: "draining" }, replicas.draining),
    el("span", { class: "muted small" }, ` desired ${replicas.desired}`),
  );
  return cell;
}

async function refreshList(mine) {
  const [board, usage] = await Promise.all([
    api("/api/dashboard?window=60"),
    api("/api/usage?by=deployment&since=24h", { optional: true }).catch(() => null),
  ]);
  if (mine !== generation) return;
  const costs = costByDeployment(usage);
  currency = usage?.currency ?? currency;
  const rows = board.deployments.map((d) => el("tr", { "data-deployment": d.name },
    el("td", {}, el("a", { href: `#/d/${encodeURIComponent(d.name)}` }, d.name)),
    el("td", {}, el("span", { class: `pill ${d.status}`, title: d.reason || "" }, d.status)),
    replicaCell(d.replicas),
    el("td", { class: "num" }, num(d.rps, 2)),
    el("td", { class: "num" }, ms(d.p50_ms)),
    el("td", { class: "num" }, ms(d.p99_ms)),
    el("td", { class: "num" }, pct(d.error_ratio)),
    el("td", { class: "num cold-requests" }, d.cold_start_requests),
    el("td", { class: "num replica-starts" }, d.replica_starts),
    el("td", { class: "num cost" }, money(costs.get(d.name))),
  ));
  $("deployments").tBodies[0].replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  setText("list-window", board.window_s);
}

function openList() {
  crumbs(null);
  show("list-view");
  const mine = generation;
  const tick = () => guarded(() => refreshList(mine));
  tick();
  timer = setInterval(tick, LIST_EVERY_MS);
}

// -- a deployment's page ----------------------------------------------------------------------
function peak(values) {
  return values.reduce((top, v) => (v != null && v > top ? v : top), 0);
}

// Replicas sit on their own axis, scaled by the target so that a replica's line meets the
// concurrency line where the deployment has exactly the capacity it asks for.
function replicaScales() {
  const top = (u) => Math.max(1, peak(u.data[1] || []) / target,
    ...[2, 3, 4].map((i) => peak(u.data[i] || []))) * 1.1;
  return {
    x: { time: true },
    y: { range: (u) => [0, top(u) * target] },
    r: { range: (u) => [0, top(u)] },
  };
}

function makeChart(id, series, { stepped = [], scales = null } = {}) {
  const box = $(id);
  const width = Math.max(280, box.clientWidth);
  const twoAxes = scales !== null;
  const opts = {
    width, height: 200,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: scales || { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: twoAxes ? [{}, { size: 48, label: "concurrency", labelSize: 18 },
      { scale: "r", side: 1, size: 40, grid: { show: false }, label: "replicas", labelSize: 18 }]
      : [{}, { size: 48 }],
    series: [{}, ...series.map(([label, color, dashed]) => ({
      label, stroke: color, width: 2, spanGaps: false,
      scale: twoAxes && label !== "concurrency" ? "r" : "y",
      dash: dashed ? [6, 4] : undefined,
      paths: stepped.includes(label) ? uPlot.paths.stepped({ align: 1 }) : undefined,
      fill: label === "concurrency" ? "rgba(245, 158, 11, 0.12)" : undefined,
    }))],
  };
  const chart = new uPlot(opts, [[], ...series.map(() => [])], box);
  new ResizeObserver(() => chart.setSize({ width: Math.max(280, box.clientWidth), height: 200 }))
    .observe(box);
  return chart;
}

function drawCharts(points) {
  if (!charts.replicas) {
    charts.replicas = makeChart("chart-replicas", [["concurrency", COLORS.concurrency],
      ["ready", COLORS.ready], ["starting", COLORS.starting], ["desired", COLORS.desired, true]],
      { stepped: ["ready", "starting", "desired"], scales: replicaScales() });
    charts.latency = makeChart("chart-latency", [["p50", COLORS.p50], ["p99", COLORS.p99]]);
    charts.rps = makeChart("chart-rps", [["requests", COLORS.rps], ["errors", COLORS.errors]]);
  }
  // Start where the deployment was first sampled (a new one has no history), but show a minute.
  const first = points.concurrency.findIndex((v) => v != null);
  const from = first < 0 ? 0 : Math.max(0, Math.min(first, points.t.length - 60));
  const cut = (column) => column.slice(from);
  charts.replicas.setData([cut(points.t), cut(points.concurrency), cut(points.ready),
    cut(points.starting), cut(points.desired)]);
  charts.latency.setData([cut(points.t), cut(points.p50_ms), cut(points.p99_ms)]);
  charts.rps.setData([cut(points.t), cut(points.requests), cut(points.errors)]);
}

function last(values) {
  for (let i = values.length - 1; i >= 0; i -= 1) if (values[i] != null) return values[i];
  return null;
}

async function refreshDetail(name, mine) {
  const [view, points, board, recent] = await Promise.all([
    api(`/api/deployments/${encodeURIComponent(name)}`),
    api(`/api/deployments/${encodeURIComponent(name)}/series?window=${WINDOW_S}`),
    api("/api/dashboard?window=60"),
    api(`/api/deployments/${encodeURIComponent(name)}/invocations?limit=25`),
  ]);
  if (mine !== generation) return;
  setText("d-name", view.name);
  const status = $("d-status");
  status.className = `pill ${view.status}`;
  setText("d-status", view.status);
  setText("d-reason", view.reason || "");
  setText("stat-ready", view.replicas.ready);
  setText("stat-starting", view.replicas.starting);
  setText("stat-desired", view.replicas.desired);
  setText("stat-concurrency", last(points.concurrency) ?? dash);
  const row = board.deployments.find((d) => d.name === name) || {};
  setText("stat-rps", num(row.rps, 2));
  setText("stat-latency", `${ms(row.p50_ms)} / ${ms(row.p99_ms)}`);
  setText("stat-errors", pct(row.error_ratio));
  setText("stat-cold", row.cold_start_requests ?? dash);
  setText("stat-starts", row.replica_starts ?? dash);
  const scaler = view.autoscaler;
  target = scaler.target_concurrency || 1;
  setText("d-autoscaler", `${scaler.policy} · ${scaler.mode} · target ${scaler.target_concurrency} per replica`);
  drawCharts(points);
  $("invocations").tBodies[0].replaceChildren(...recent.invocations.map((i) => el("tr",
    { class: i.ok ? "" : "failed" },
    el("td", {}, clock(i.at)), el("td", { class: "mono" }, i.request_id),
    el("td", {}, i.revision), el("td", {}, i.error_type ? `${i.status} ${i.error_type}` : i.status),
    el("td", { class: "num" }, ms(i.latency_ms)), el("td", { class: "num" }, ms(i.queue_wait_ms)),
    el("td", {}, i.cold_start ? "cold" : ""), el("td", { class: "mono" }, i.replica_id ?? dash),
  )));
}

function drawTraffic(traffic) {
  const weights = Object.entries(traffic.traffic || {}).map(([rev, weight]) => [rev, Number(weight)]);
  const palette = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444", "#64748b"];
  $("split").replaceChildren(...weights.filter(([, w]) => w > 0).map(([rev, weight], i) =>
    el("div", { class: "segment", style: `flex:${weight};background:${palette[i % palette.length]}`,
                title: `revision ${rev}: ${weight}%` }, `r${rev} ${weight}%`)));
  const stats = traffic.revisions || {};
  const numbers = [...new Set([...weights.map(([rev]) => rev), ...Object.keys(stats)])];
  $("revisions").tBodies[0].replaceChildren(...numbers.map((rev) => {
    const s = stats[rev] || {};
    const label = `r${rev}${s.shadow ? " (shadow)" : ""}${String(traffic.stable) === rev ? " · stable" : ""}`;
    return el("tr", {}, el("td", {}, label),
      el("td", { class: "num" }, `${(traffic.traffic || {})[rev] ?? 0}%`),
      el("td", { class: "num" }, s.requests ?? dash), el("td", { class: "num" }, s.errors ?? dash),
      el("td", { class: "num" }, ms(s.p50_ms)), el("td", { class: "num" }, ms(s.p95_ms)));
  }));
  const rollout = traffic.rollout;
  setText("rollout", rollout ? `rollout to r${rollout.to}: ${rollout.state} at ${rollout.weight}%`
    + (rollout.reason ? ` (${rollout.reason})` : "") : "");
}

function drawAlerts(alerts, name) {
  const list = $("alerts");
  if (alerts === null) {
    list.replaceChildren(el("li", { class: "muted" }, "Alerts are not available on this server."));
    return;
  }
  const all = Array.isArray(alerts) ? alerts : alerts.alerts || alerts.firing || [];
  const namespace = sessionStorage.getItem(NAMESPACE) || "default";
  const firing = all.filter((a) => (a.state ?? "firing") === "firing"
    && (a.deployment == null || a.deployment === name)
    && (a.namespace == null || a.namespace === namespace));
  const since = (t) => (typeof t === "number" ? ` since ${clock(t)}` : t ? ` since ${t}` : "");
  list.replaceChildren(...(firing.length ? firing.map((a) => el("li", { class: "alert" },
    el("strong", {}, a.name ?? a.rule ?? "alert"), " ",
    el("span", {}, a.message ?? ""),
    el("span", { class: "muted small" }, since(a.since)),
  )) : [el("li", { class: "muted" }, "None firing.")]));
}

function logLine(line) {
  // Replica logs are JSON lines; anything else is shown as it came.
  let record;
  try { record = JSON.parse(line); } catch { return line; }
  if (record === null || typeof record !== "object") return line;
  const stamp = record.ts ?? record.time ?? record.timestamp ?? "";
  const when = typeof stamp === "number" ? clock(stamp) : stamp;
  const who = record.replica ?? record.replica_id ?? record.stream ?? "";
  const text = record.message ?? record.msg ?? record.line ?? JSON.stringify(record);
  const level = record.level ? `${record.level} ` : "";
  return `${when} ${who ? `[${who}] ` : ""}${level}${text}`.trim();
}

async function refreshSlow(name, mine) {
  const base = `/api/deployments/${encodeURIComponent(name)}`;
  const [traffic, logs, alerts] = await Promise.all([
    api(`${base}/traffic`),
    api(`${base}/logs?tail=100`, { text: true }),
    api("/api/alerts", { optional: true }).catch(() => null),
  ]);
  if (mine !== generation) return;
  drawTraffic(traffic);
  drawAlerts(alerts, name);
  const pre = $("logs");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  setText("logs", logs ? logs.split("\n").filter(Boolean).map(logLine).join("\n") : "(no log lines yet)");
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// A new deployment's page starts blank: nothing of the one shown before may linger.
function clearDetail(name) {
  setText("d-name", name);
  setText("d-status", "");
  $("d-status").className = "pill";
  setText("d-reason", "");
  setText("d-autoscaler", "");
  for (const id of ["stat-ready", "stat-starting", "stat-desired", "stat-concurrency", "stat-rps",
    "stat-latency", "stat-errors", "stat-cold", "stat-starts"]) setText(id, dash);
  for (const id of ["invocations", "revisions"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["split", "alerts"]) $(id).replaceChildren();
  setText("rollout", "");
  setText("logs", "");
}

function openDeployment(name) {
  crumbs(name);
  clearDetail(name);
  show("detail-view");
  const mine = generation;
  const fast = () => guarded(() => refreshDetail(name, mine));
  const slow = () => guarded(() => refreshSlow(name, mine));
  fast();
  slow();
  timer = setInterval(fast, DETAIL_EVERY_MS);
  slowTimer = setInterval(slow, SLOW_EVERY_MS);
}

// -- start --------------------------------------------------------------------------------
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const namespace = $("namespace").value.trim();
  if (namespace) sessionStorage.setItem(NAMESPACE, namespace);
  else sessionStorage.removeItem(NAMESPACE);
  $("login-error").textContent = "";
  try {
    await signIn(key);
  } catch (error) {
    $("login-error").textContent = error.message;
    return;
  }
  $("api-key").value = "";
  const next = nextPage();
  if (next) location.assign(next);
  else route();
});
$("sign-out").addEventListener("click", async () => {
  await signOut();
  route();
});
window.addEventListener("hashchange", route);
// A session cookie from an earlier sign-in (another tab, a reload) still counts.
fetch("/api/session", { headers: apiHeaders(), credentials: "same-origin" })
  .then((response) => { signedIn = response.ok; })
  .catch(() => { signedIn = false; })
  .finally(route);
