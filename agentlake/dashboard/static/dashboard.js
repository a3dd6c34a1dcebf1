// AgentLake dashboard: draws the server's plotly figures and pages through long trajectories.
"use strict";

function renderCharts() {
  document.querySelectorAll("div.chart").forEach(function (div) {
    const src = document.getElementById(div.id + "-data");
    if (!src) return;
    const fig = JSON.parse(src.textContent);
    Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false }).then(function () {
      div.dataset.rendered = "1";
    });
    div.on("plotly_click", function (ev) {
      const p = ev.points && ev.points[0];
      if (!p) return;
      if (typeof p.customdata === "string" && p.customdata.startsWith("/")) {
        window.location.href = p.customdata;
      } else if (div.dataset.jump === "1" && typeof p.customdata === "number") {
        Viewer.load(p.customdata - 1);
      }
    });
  });
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "" : String(text);
  tr.appendChild(td);
  return td;
}

function block(td, label, text) {
  if (!text) return;
  const d = document.createElement("div");
  d.className = "payload";
  const b = document.createElement("b");
  b.textContent = label + " ";
  const pre = document.createElement("code");
  pre.textContent = text;
  d.appendChild(b);
  d.appendChild(pre);
  td.appendChild(d);
}

const Viewer = {
  el: null,
  history: [],
  after: -1,
  load: async function (after) {
    const v = Viewer.el;
    if (!v) return;
    const limit = parseInt(v.dataset.limit, 10);
    const url = "/api/trajectories/" + encodeURIComponent(v.dataset.tid) + "/events?after=" + after + "&limit=" + limit;
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) {
      document.getElementById("viewer-status").textContent = "error " + r.status;
      return;
    }
    const d = await r.json();
    const body = document.querySelector("#events-table tbody");
    body.textContent = "";
    d.events.forEach(function (e) {
      const tr = document.createElement("tr");
      tr.dataset.seq = e.seq;
      if (e.is_error || e.error) tr.className = "failing";
      cell(tr, e.seq);
      cell(tr, (e.ts || "").replace("T", " ").slice(0, 23));
      cell(tr, e.record + (e.kind ? " · " + e.kind : ""));
      const detail = cell(tr, "");
      if (e.record === "ToolCallRequested" || e.record === "ToolCallCompleted") {
        block(detail, "tool", (e.server_id ? e.server_id + "/" : "") + e.tool + "  (call " + e.call_id.slice(0, 12) + ")");
        block(detail, "arguments", e.arguments);
        block(detail, "result", e.result);
      } else if (e.record === "TrajectoryStarted") {
        block(detail, "task", e.task);
      } else if (e.record === "TrajectoryEnded") {
        block(detail, "outcome", e.outcome);
        block(detail, "answer", e.final_answer);
      } else {
        block(detail, "", e.content);
      }
      const status = cell(tr, "");
      if (e.is_error || e.error) block(status, "error", (e.error_kind ? e.error_kind + ": " : "") + (e.error || ""));
      (e.findings || []).forEach(function (f) { block(status, "denied", f.rule + ": " + f.detail); });
      cell(tr, e.latency_ms ? e.latency_ms.toFixed(1) + " ms" : "");
      body.appendChild(tr);
    });
    if (after !== Viewer.after) {
      Viewer.history.push(Viewer.after);
      Viewer.after = after;
    }
    Viewer.next = d.more ? d.next_after : null;
    const first = d.events.length ? d.events[0].seq : "-";
    const last = d.events.length ? d.events[d.events.length - 1].seq : "-";
    document.getElementById("viewer-status").textContent =
      "seq " + first + "–" + last + " of " + v.dataset.total + " events";
    document.getElementById("next-page").disabled = !d.more;
    document.getElementById("prev-page").disabled = after < 0;
    v.dataset.loaded = "1";
  },
  init: function () {
    Viewer.el = document.getElementById("viewer");
    if (!Viewer.el) return;
    document.getElementById("next-page").addEventListener("click", function () {
      if (Viewer.next != null) Viewer.load(Viewer.next);
    });
    document.getElementById("prev-page").addEventListener("click", function () {
      const limit = parseInt(Viewer.el.dataset.limit, 10);
      Viewer.load(Math.max(-1, Viewer.after - limit));
    });
    document.getElementById("jump").addEventListener("change", function (ev) {
      const seq = parseInt(ev.target.value, 10);
      if (!isNaN(seq)) Viewer.load(seq - 1);
    });
    Viewer.load(-1);
  },
};

document.addEventListener("DOMContentLoaded", function () {
  renderCharts();
  Viewer.init();
});
