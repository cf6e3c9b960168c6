// Small behaviours that belong to no single element. The Content-Security-Policy allows no
// inline script and no eval, so they live here, keyed on data-* attributes, instead of on*=""
// or hx-on.
//   canvas[data-losses]  one loss series [[step, loss], ...] (the job page)
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
  document.addEventListener("input", function (e) { if (e.target.id) redrawFor(e.target); });
  document.addEventListener("change", function (e) { if (e.target.id && e.target.type === "checkbox") redrawFor(e.target); });

  // <form data-confirm="question">: ask before a plain (non-htmx) submit.
  document.addEventListener("submit", function (e) {
    const form = e.target;
    if (form.matches("form[data-no-submit]")) { e.preventDefault(); return; }
    if (form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });

  document.addEventListener("click", function (e) {
    const closer = e.target.closest("[data-close-dialog]");
    if (closer) { const dialog = closer.closest("dialog"); if (dialog) dialog.remove(); return; }
    const select = e.target.closest("[data-select-on-click]");
    if (select && select.select) select.select();
  });

  // <pre data-scroll-bottom>: keep the newest log lines in view after each swap.
  document.addEventListener("htmx:afterSwap", function (e) {
    const el = e.detail && e.detail.target;
    if (el && el.hasAttribute && el.hasAttribute("data-scroll-bottom")) el.scrollTop = el.scrollHeight;
  });

  // <div data-poll-while-busy="400" hx-trigger="stcloud:poll">: fire stcloud:poll every N ms
  // while the element carries htmx-request (it is the indicator of a running request).
  const polling = new WeakSet();
  function startPolling(root) {
    const scope = root && root.querySelectorAll ? root : document;
    const found = Array.from(scope.querySelectorAll("[data-poll-while-busy]"));
    if (scope.matches && scope.matches("[data-poll-while-busy]")) found.push(scope);
    found.forEach(function (el) {
      if (polling.has(el)) return;
      polling.add(el);
      const every = parseInt(el.dataset.pollWhileBusy, 10) || 400;
      const timer = setInterval(function () {
        if (!el.isConnected) { clearInterval(timer); return; }
        if (el.classList.contains("htmx-request") && window.htmx) window.htmx.trigger(el, "stcloud:poll");
      }, every);
    });
  }


  document.addEventListener("DOMContentLoaded", function () { drawAll(document); startPolling(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); startPolling(e.target); });
  window.stcloud = { drawLoss: drawAll, smooth: smooth, startPolling: startPolling };
})();
