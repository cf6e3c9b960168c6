// Spend page charts, drawn from JSON islands (#spend-data, #estimate-data) on load and after
// htmx swaps. Chart.js 4 (vendored) is loaded by base.html.
(function () {
  const COLORS = { replicate: "#3358d4", worker: "#1f8a4c", local: "#b7791f" };
  const charts = {};

  function readJson(root, id) {
    const el = (root.querySelector ? root.querySelector("#" + id) : null) || document.getElementById(id);
    if (!el) return null;
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function replace(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return;
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(canvas, config);
  }

  function drawSpend(root) {
    const data = readJson(root, "spend-data");
    if (!data) return;
    const datasets = Object.keys(data.series).map(function (p) {
      return { type: "bar", label: p, data: data.series[p], backgroundColor: COLORS[p] || "#888", stack: "spend", order: 2 };
    });
    if (data.limit) {
      if (data.limit.cumulative) {
        datasets.push({ type: "line", label: "spend so far this " + data.limit.period.replace("ly", "").replace("dai", "day"),
                        data: data.limit.cumulative, borderColor: "#6b7385", pointRadius: 0, stack: "cumulative", order: 1 });
      }
      datasets.push({ type: "line", label: data.limit.label + " $" + data.limit.amount_usd.toFixed(2),
                      data: data.labels.map(function () { return data.limit.amount_usd; }),
                      borderColor: "#c23a3a", borderDash: [6, 4], pointRadius: 0, stack: "limit", order: 0 });
    }
    replace("spend-chart", {
      data: { labels: data.labels, datasets: datasets },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "USD" } } },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": $" + Number(c.raw).toFixed(2); } } } }
      }
    });
  }

  function drawEstimates(root) {
    const rows = readJson(root, "estimate-data");
    if (!rows || !rows.length) return;
    replace("estimate-chart", {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.name; }),
        datasets: [
          { label: "estimate", data: rows.map(function (r) { return r.estimated_cost_usd; }), backgroundColor: "#9fb0e6" },
          { label: "actual", data: rows.map(function (r) { return r.cost_usd; }), backgroundColor: "#3358d4" }
        ]
      },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: "USD" } } },
        plugins: { tooltip: { callbacks: { afterBody: function (items) {
          const r = rows[items[0].dataIndex];
          return "off by " + (r.error_pct > 0 ? "+" : "") + r.error_pct + "% (" + (r.basis || "?") + ")";
        } } } }
      }
    });
  }

  function draw(root) { drawSpend(root || document); drawEstimates(root || document); }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
  window.stcloudCosts = { draw: draw, charts: charts };
})();
