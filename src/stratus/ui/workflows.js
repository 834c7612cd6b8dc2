// Workflows on the dashboard: the list of workflows and executions (#/workflows), and one
// execution drawn as a graph of its steps, coloured by state (#/x/<id>). Inline SVG, no library.
// Uses app.js's helpers (api, el, show, crumbs, guarded, generation, timer); loaded before it.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const BOX = { w: 168, h: 42, gapY: 26, gapX: 24, pad: 14 };
const STATE_COLORS = { succeeded: "#10b981", failed: "#ef4444", caught: "#f59e0b",
                       running: "#2563eb", cancelled: "#a855f7", pending: "#cbd5e1" };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

// The latest state of each step id (a step in a loop or a map runs more than once).
function statesOf(execution) {
  const states = new Map();
  for (const step of execution.steps) {
    const seen = states.get(step.step) || { state: step.state, runs: 0, attempts: 0, ms: 0 };
    seen.state = step.state;
    seen.runs += 1;
    seen.attempts += step.attempts;
    seen.ms += step.duration_ms || 0;
    states.set(step.step, seen);
  }
  return states;
}

// Lays a list of steps out top-down; a parallel's branches side by side under it, a map's step
// inside its box. Returns the size and fills `places` (id -> {x, y, w, h, node}).
function layout(steps, x, y, places) {
  let width = BOX.w;
  let cursor = y;
  for (const node of steps) {
    if (node.branches) {
      places.set(node.id, { x, y: cursor, w: BOX.w, h: BOX.h, node });
      let bx = x;
      let tallest = 0;
      for (const branch of node.branches) {
        const size = layout(branch, bx, cursor + BOX.h + BOX.gapY, places);
        bx += size.w + BOX.gapX;
        tallest = Math.max(tallest, size.h);
      }
      width = Math.max(width, bx - x - BOX.gapX);
      cursor += BOX.h + BOX.gapY + tallest + BOX.gapY;
    } else if (node.step) {
      const h = BOX.h * 2 + BOX.pad * 2;
      places.set(node.id, { x, y: cursor, w: BOX.w + BOX.pad * 2, h, node });
      layout([node.step], x + BOX.pad, cursor + BOX.h + BOX.pad - 8, places);
      width = Math.max(width, BOX.w + BOX.pad * 2);
      cursor += h + BOX.gapY;
    } else {
      places.set(node.id, { x, y: cursor, w: BOX.w, h: BOX.h, node });
      cursor += BOX.h + BOX.gapY;
    }
  }
  return { w: width, h: cursor - y - BOX.gapY };
}

function edgesOf(steps, edges) {
  for (const node of steps) {
    if (node.branches) { // out to each branch's first step, back from each one's last
      for (const branch of node.branches) {
        edges.push([node.id, branch[0].id, "next"]);
        if (node.next) edges.push([branch[branch.length - 1].id, node.next, "next"]);
      }
    } else if (node.next) edges.push([node.id, node.next, "next"]);
    for (const target of node.choices || []) edges.push([node.id, target, "choice"]);
    if (node.default) edges.push([node.id, node.default, "choice"]);
    if (node.catch) edges.push([node.id, node.catch, "catch"]);
    for (const branch of node.branches || []) edgesOf(branch, edges);
  }
  return edges;
}

function drawGraph(execution) {
  const places = new Map();
  const size = layout(execution.graph, 20, 20, places);
  const states = statesOf(execution);
  const root = svg("svg", { class: "wf-graph", width: size.w + 200, height: size.h + 40,
                            viewBox: `0 0 ${size.w + 200} ${size.h + 40}` });
  root.append(svg("defs", {}), svg("g", { class: "edges" }), svg("g", { class: "boxes" }));
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                 markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#64748b" }));
  root.firstChild.append(marker);
  for (const [from, to, kind] of edgesOf(execution.graph, [])) {
    const a = places.get(from);
    const b = places.get(to);
    if (!a || !b) continue;
    const x1 = a.x + a.w / 2;
    const y1 = a.y + a.h;
    const x2 = b.x + b.w / 2;
    const y2 = b.y;
    let d = `M ${x1} ${y1} L ${x2} ${y2}`;
    if (y2 <= y1 || kind !== "next") { // a jump: around the right-hand side
      const side = Math.max(a.x + a.w, b.x + b.w) + 40 + (kind === "catch" ? 30 : 0);
      d = `M ${a.x + a.w} ${a.y + a.h / 2} C ${side} ${a.y + a.h / 2}, ${side} ${b.y + b.h / 2}, ${b.x + b.w} ${b.y + b.h / 2}`;
    }
    root.children[1].append(svg("path", { d, class: `edge ${kind}`, "marker-end": "url(#arrow)" }));
  }
  for (const [id, place] of places) {
    const seen = states.get(id);
    const state = seen ? seen.state : "pending";
    const group = svg("g", { class: `box ${state}`, "data-step": id, "data-state": state });
    group.append(svg("rect", { x: place.x, y: place.y, width: place.w, height: place.h, rx: 7,
                               fill: place.node.step ? "none" : STATE_COLORS[state] || "#cbd5e1",
                               stroke: STATE_COLORS[state] || "#94a3b8", "stroke-width": 2 }));
    const label = place.node.type === "task" ? place.node.deployment : place.node.type;
    group.append(svg("text", { x: place.x + 10, y: place.y + 17, class: "name" }, id));
    const detail = seen ? `${label} · ${state}${seen.runs > 1 ? ` ×${seen.runs}` : ""}` : label;
    group.append(svg("text", { x: place.x + 10, y: place.y + 33, class: "detail" }, detail));
    group.append(svg("title", {}, seen ? `${id}: ${state}, ${seen.attempts} attempt(s), ${seen.ms.toFixed(1)} ms` : `${id}: not run`));
    root.children[2].append(group);
  }
  return root;
}

async function refreshExecution(id, mine) {
  const execution = await api(`/api/executions/${encodeURIComponent(id)}`);
  if (mine !== generation) return;
  setText("x-name", `${execution.workflow} · ${execution.id}`);
  const status = $("x-status");
  status.className = `pill ${execution.status}`;
  setText("x-status", execution.status);
  setText("x-duration", execution.duration_s == null ? "" : `${execution.duration_s.toFixed(3)} s`);
  $("x-graph").replaceChildren(drawGraph(execution));
  const result = execution.status === "succeeded" ? execution.output : execution.error;
  setText("x-result", result == null ? "" : JSON.stringify(result, null, 2));
  $("x-steps").tBodies[0].replaceChildren(...execution.steps.map((s) => el("tr",
    { class: s.state === "failed" ? "failed" : "" },
    el("td", { class: "mono" }, s.key), el("td", {}, s.step), el("td", {}, s.type),
    el("td", {}, el("span", { class: `pill ${s.state}` }, s.state)),
    el("td", { class: "num" }, s.attempts), el("td", { class: "num" }, ms(s.duration_ms)),
    el("td", { class: "mono" }, s.error ? `${s.error.type}: ${s.error.message}` : ""))));
  if (execution.status !== "running") clearInterval(timer);
}

function openExecution(id) {
  const nav = $("crumbs");
  nav.replaceChildren(el("a", { href: "#/workflows" }, "Workflows"), " / ", el("span", {}, id));
  show("execution-view");
  const mine = generation;
  const tick = () => guarded(() => refreshExecution(id, mine));
  tick();
  timer = setInterval(tick, 1000);
}

async function refreshWorkflows(mine) {
  const [flows, runs] = await Promise.all([api("/api/workflows"), api("/api/executions?limit=50")]);
  if (mine !== generation) return;
  $("wf-list").tBodies[0].replaceChildren(...flows.workflows.map((w) => el("tr", {},
    el("td", {}, w.name), el("td", {}, clock(w.updated_at)))));
  $("wf-executions").tBodies[0].replaceChildren(...runs.executions.map((x) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/x/${encodeURIComponent(x.id)}` }, x.id)),
    el("td", {}, x.workflow), el("td", {}, el("span", { class: `pill ${x.status}` }, x.status)),
    el("td", {}, clock(x.created_at)),
    el("td", { class: "num" }, x.duration_s == null ? dash : ms(x.duration_s * 1000)))));
}

function openWorkflows() {
  $("crumbs").replaceChildren(el("span", {}, "Workflows"));
  show("workflows-view");
  const mine = generation;
  const tick = () => guarded(() => refreshWorkflows(mine));
  tick();
  timer = setInterval(tick, 2000);
}
