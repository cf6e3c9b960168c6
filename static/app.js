// Small behaviours that belong to no single element: charts drawn from data attributes, and
// the few event handlers pages need. The Content-Security-Policy allows no inline script and
// no eval, so these live here, keyed on data-* attributes, instead of on*="" or hx-on.
(function () {
  const charts = new WeakMap();
  function drawLoss(root) {
    (root || document).querySelectorAll("canvas[data-losses]").forEach(function (canvas) {
      if (!window.Chart) return;
      const points = JSON.parse(canvas.dataset.losses || "[]");
      const old = charts.get(canvas); if (old) old.destroy();
      charts.set(canvas, new Chart(canvas, {
        type: "line",
        data: { labels: points.map(p => p[0]), datasets: [{ label: "loss", data: points.map(p => p[1]), borderColor: "#3358d4", pointRadius: 0, tension: 0.2 }] },
        options: { animation: false, maintainAspectRatio: false, scales: { x: { title: { display: true, text: "step" } } }, plugins: { legend: { display: false } } }
      }));
    });
  }

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

  document.addEventListener("DOMContentLoaded", function () { drawLoss(document); startPolling(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawLoss(e.target); startPolling(e.target); });
  window.stcloud = { drawLoss: drawLoss };
})();
