// Small behaviours that belong to no single element: charts drawn from data attributes.
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
  document.addEventListener("DOMContentLoaded", function () { drawLoss(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawLoss(e.target); });
  window.stcloud = { drawLoss: drawLoss };
})();
