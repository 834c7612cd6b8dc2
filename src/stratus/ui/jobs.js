// Jobs on the dashboard: the list of runs (#/jobs), and one run (#/j/<id>) with its parameters,
// final metrics, a uPlot chart per metric curve (by step or epoch) and its log.
// Uses app.js's helpers (api, el, show, guarded, setText, logLine, generation, timer, charts);
// loaded before it.
"use strict";

const CURVE_COLORS = ["#2563eb", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#0ea5e9"];
const MAX_CURVES = 6;
const STEP_INCREMENTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5];
const fmt = (v) => (typeof v === "number" ? Number(v.toPrecision(6)) : v ?? dash);

async function refreshJobs(mine) {
  const experiment = $("j-experiment").value.trim();
  const query = experiment ? `?experiment=${encodeURIComponent(experiment)}&limit=100` : "?limit=100";
  const answer = await api(`/api/jobs${query}`);
  if (mine !== generation) return;
  $("j-list").tBodies[0].replaceChildren(...answer.jobs.map((job) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/j/${encodeURIComponent(job.id)}` }, job.id)),
    el("td", {}, job.experiment || dash),
    el("td", {}, el("span", { class: `pill ${job.status}` }, job.status)),
    el("td", { class: "num" }, job.epoch == null ? dash
      : job.total_epochs ? `${job.epoch}/${job.total_epochs}` : job.epoch),
    el("td", { class: "num" }, fmt(job.loss)),
    el("td", {}, clock(job.submitted_at)), el("td", {}, job.reason || ""))));
  $("j-empty").hidden = answer.jobs.length > 0;
}

function openJobs() {
  $("crumbs").replaceChildren(el("span", {}, "Jobs"));
  show("jobs-view");
  const mine = generation;
  const tick = () => guarded(() => refreshJobs(mine));
  $("j-experiment").onchange = tick;
  tick();
  timer = setInterval(tick, 2000);
}

function curveChart(box, name, color) {
  const chart = new uPlot({
    width: Math.max(260, box.clientWidth), height: 180, legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false } },
    axes: [{ label: "step", labelSize: 16, incrs: STEP_INCREMENTS }, { size: 56 }],
    series: [{ label: "step" }, { label: name, stroke: color, width: 2, points: { size: 4 } }],
  }, [[], []], box);
  new ResizeObserver(() => chart.setSize({ width: Math.max(260, box.clientWidth), height: 180 }))
    .observe(box);
  return chart;
}

function drawCurves(curves) {
  const names = Object.keys(curves).sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b)))
    .slice(0, MAX_CURVES);
  const holder = $("j-curves");
  if (names.join() !== holder.dataset.names) { // a new metric appeared: lay the charts out again
    for (const chart of Object.values(charts)) chart.destroy();
    charts = {};
    holder.replaceChildren();
    holder.dataset.names = names.join();
    names.forEach((name, i) => {
      const box = el("div", { class: "curve", "data-metric": name });
      holder.append(box);
      charts[name] = curveChart(box, name, CURVE_COLORS[i % CURVE_COLORS.length]);
    });
  }
  for (const name of names) {
    charts[name].setData([curves[name].map((p) => p[0]), curves[name].map((p) => p[1])]);
  }
  $("j-no-curves").hidden = names.length > 0;
}

function pairs(tableId, values) {
  $(tableId).tBodies[0].replaceChildren(...Object.keys(values).sort().map((key) =>
    el("tr", {}, el("td", {}, key), el("td", { class: "num mono" }, fmt(values[key])))));
}

async function refreshJob(id, mine) {
  const path = `/api/jobs/${encodeURIComponent(id)}`;
  const [job, metrics, logs] = await Promise.all([api(path), api(`${path}/metrics`),
    api(`${path}/logs?tail=300`, { text: true })]);
  if (mine !== generation) return;
  setText("j-name", `${job.id}${job.experiment ? ` · ${job.experiment}` : ""}`);
  $("j-status").className = `pill ${job.status}`;
  setText("j-status", job.status);
  setText("j-reason", job.error || job.reason || "");
  setText("j-epoch", job.epoch == null ? dash : job.total_epochs ? `${job.epoch} / ${job.total_epochs}` : job.epoch);
  setText("j-loss", fmt(job.loss));
  setText("j-checkpoints", job.checkpoints);
  setText("j-model", job.model ? `${job.model.format} (${job.model.framework || "?"})` : dash);
  pairs("j-params", job.params);
  pairs("j-metrics", job.metrics);
  drawCurves(metrics.curves);
  const pre = $("j-logs");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  setText("j-logs", logs ? logs.split("\n").filter(Boolean).map(logLine).join("\n") : "(no log lines yet)");
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  if (["succeeded", "failed", "cancelled"].includes(job.status)) clearInterval(timer);
}

function openJob(id) {
  $("crumbs").replaceChildren(el("a", { href: "#/jobs" }, "Jobs"), " / ", el("span", {}, id));
  show("job-view");
  $("j-curves").dataset.names = "";
  const mine = generation;
  const tick = () => guarded(() => refreshJob(id, mine));
  tick();
  timer = setInterval(tick, 1000);
}
