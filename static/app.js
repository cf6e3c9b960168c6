// Small behaviours that belong to no single element: loss charts drawn from data attributes.
//   canvas[data-losses]  one series [[step, loss], ...] (the job page)
//   canvas[data-series]  several [{label, points: [[step, loss], ...]}, ...] (compare)
//   data-smoothing="<id of a range input 0..0.99>", data-logscale="<id of a checkbox>"
// Smoothing is an exponential moving average with bias correction (as TensorBoard does).
(function () {
  const charts = new WeakMap();
  const COLORS = ["#3358d4", "#d4573a", "#2f9e5b", "#9b4dca", "#c99a0e", "#1c8fa6", "#c2417f", "#6b7280"];

  function smooth(points, weight) {
    if (!weight) return points;
    let last = 0, debias = 1;
    return points.map(function (p) {
      last = last * weight + (1 - weight) * p[1];
      debias *= weight;
      return [p[0], last / (1 - debias)];
    });
  }
  function seriesOf(canvas) {
    if (canvas.dataset.series) return JSON.parse(canvas.dataset.series || "[]");
    return [{ label: "loss", points: JSON.parse(canvas.dataset.losses || "[]") }];
  }
  function control(id) { return id ? document.getElementById(id) : null; }

  function draw(canvas) {
    if (!window.Chart) return;
    const slider = control(canvas.dataset.smoothing), log = control(canvas.dataset.logscale);
    const weight = slider ? Math.min(0.99, Math.max(0, parseFloat(slider.value) || 0)) : 0;
    const series = seriesOf(canvas);
    const datasets = series.map(function (s, i) {
      return { label: s.label, borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
               pointRadius: 0, borderWidth: 1.6, tension: 0,
               data: smooth(s.points, weight).map(function (p) { return { x: p[0], y: p[1] }; }) };
    });
    canvas.dataset.drawnSeries = String(datasets.length);
    const old = charts.get(canvas); if (old) old.destroy();
    charts.set(canvas, new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false, maintainAspectRatio: false, parsing: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: { x: { type: "linear", title: { display: true, text: "step" } },
                  y: { type: log && log.checked ? "logarithmic" : "linear", title: { display: true, text: "loss" } } },
        plugins: { legend: { display: datasets.length > 1 },
                   tooltip: { callbacks: { title: function (items) { return items.length ? "step " + items[0].parsed.x : ""; } } } }
      }
    }));
  }
  function drawAll(root) {
    (root || document).querySelectorAll("canvas[data-losses], canvas[data-series]").forEach(draw);
  }
  function redrawFor(control) {
    document.querySelectorAll("canvas[data-losses], canvas[data-series]").forEach(function (c) {
      if (c.dataset.smoothing === control.id || c.dataset.logscale === control.id) draw(c);
    });
    const out = document.querySelector('output[for="' + control.id + '"]');
    if (out && control.type === "range") out.textContent = control.value;
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
  document.addEventListener("input", function (e) { if (e.target.id) redrawFor(e.target); });
  document.addEventListener("change", function (e) { if (e.target.id && e.target.type === "checkbox") redrawFor(e.target); });
  window.stcloud = { drawLoss: drawAll, smooth: smooth };
})();
