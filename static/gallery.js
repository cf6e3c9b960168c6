// The job page's sample gallery: a click on a thumbnail opens it large in a dialog
// (delegated: the gallery is re-rendered by htmx while the job runs).
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    var link = ev.target.closest && ev.target.closest("a[data-enlarge]");
    if (!link) return;
    var dialog = document.getElementById("sample-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return; // plain link: opens the image
    ev.preventDefault();
    var img = document.getElementById("sample-dialog-img");
    img.src = link.getAttribute("href");
    img.alt = link.querySelector("img") ? link.querySelector("img").alt : "";
    document.getElementById("sample-dialog-caption").textContent = link.getAttribute("data-caption") || "";
    dialog.showModal();
  });
})();
