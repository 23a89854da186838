// The queue dashboard: polls the same REST endpoints as every other client,
// with the token the operator entered (kept in this browser's localStorage).
"use strict";
const $ = (s) => document.querySelector(s);
const history = {}; // queue -> last 60 succeeded counts (throughput sparkline)
let token = localStorage.getItem("lucid-token") || "";

async function api(method, path) {
  const r = await fetch(path, { method, headers: { Authorization: "Bearer " + token } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.code + ": " + body.error.message) || "HTTP " + r.status);
  return body;
}

function cell(v) {
  const td = document.createElement("td");
  if (v instanceof Node) td.appendChild(v); else td.textContent = v == null ? "-" : String(v);
  return td;
}

function fill(id, rows) {
  const tbody = $(id + " tbody");
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((c) => tr.appendChild(cell(c)));
    return tr;
  }));
}

function bar(fraction, bad) {
  const outer = document.createElement("span");
  outer.className = "bar" + (bad ? " bad" : "");
  const inner = document.createElement("div");
  inner.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%";
  outer.appendChild(inner);
  return outer;
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "120"); svg.setAttribute("height", "20");
  const rates = values.slice(1).map((v, i) => Math.max(0, v - values[i]));
  const max = Math.max(1, ...rates);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2f7de1");
  line.setAttribute("points", rates.map((r, i) => `${i * 2},${19 - (r / max) * 18}`).join(" "));
  svg.appendChild(line);
  return svg;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); $("#status").textContent = label + ": done"; }
    catch (e) { $("#status").textContent = label + ": " + e.message; $("#status").className = "err"; }
    refresh();
  });
  return b;
}

async function refresh() {
  if (!token) return;
  try {
    const [queues, batches, schedules] = await Promise.all([
      api("GET", "/api/v1/queues"),
      api("GET", "/api/v1/batches?page_size=10"),
      api("GET", "/api/v1/schedules"),
    ]);
    fill("#queues", queues.queues.map((q) => {
      const h = (history[q.queue] = (history[q.queue] || []).concat(q.succeeded).slice(-60));
      return [q.queue, q.queued, q.scheduled, q.running, q.succeeded, q.dead, sparkline(h)];
    }));
    fill("#workers", queues.workers.map((w) => [w.name, w.host, (w.current_jobs || []).length + ((w.current_jobs || []).length ? ": " + w.current_jobs.slice(0, 3).join(", ") : ""), w.last_seen, w.queues.join(", ")]));
    fill("#batches", batches.items.map((b) => {
      const pct = Math.round(b.progress * 100) + "%";
      const row = [b.batch_id, b.kind, b.status, bar(b.progress, b.failed > 0), pct];
      return row;
    }));
    const dead = await Promise.all(queues.queues.filter((q) => q.dead > 0).map((q) =>
      api("GET", `/api/v1/queues/${q.queue}/dead?page_size=20`).then((d) => d.jobs)));
    fill("#dead", dead.flat().map((j) => [j.job_id, j.queue, j.attempts, j.last_error,
      button("Retry", () => api("POST", `/api/v1/jobs/${encodeURIComponent(j.job_id)}/retry`))]));
    fill("#schedules", schedules.items.map((s) => [s.name, s.cron, s.next_fire, s.last_fire,
      s.paused ? "paused" : (s.enabled ? "active" : "disabled"),
      s.paused ? button("Resume", () => api("POST", `/api/v1/schedules/${s.name}/resume`))
               : button("Pause", () => api("POST", `/api/v1/schedules/${s.name}/pause`))]));
    $("#status").textContent = "updated " + new Date().toLocaleTimeString() + (schedules.leader ? ", scheduler leader " + schedules.leader : "");
    $("#status").className = "";
  } catch (e) {
    $("#status").textContent = e.message;
    $("#status").className = "err";
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  localStorage.setItem("lucid-token", token);
  refresh();
});
if (token) $("#token").value = token;
refresh();
setInterval(refresh, 1000);
