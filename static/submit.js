// The Submit page: fields that depend on the chosen provider (read from its capabilities,
// rendered as data attributes on the radio) and the progress poller's re-arming.
(function () {
  function chosen(form) {
    return form.querySelector("input[name=provider]:checked");
  }
  function show(form, name, visible) {
    form.querySelectorAll('[data-depends="' + name + '"]').forEach(function (el) { el.hidden = !visible; });
  }
  function sync(form) {
    const radio = chosen(form);
    const caps = radio ? radio.dataset : {};
    const delivery = form.querySelector("#delivery-type");
    show(form, "hardware", caps.hardware === "1");
    show(form, "requirements", caps.requirements === "1");
    show(form, "hub", !!delivery && delivery.value === "hub");
    show(form, "s3", !!delivery && delivery.value === "s3");
    // Self-hosted workers upload the outputs here: the "keep with the provider" choice says so.
    const keep = delivery && delivery.querySelector("option[data-label-self]");
    if (keep && radio) keep.textContent = caps.uploads === "1" ? keep.dataset.labelCloud : keep.dataset.labelSelf;
    // A provider's own note (e.g. Replicate's missing token) only while that provider is chosen.
    form.querySelectorAll("[data-for-provider]").forEach(function (el) {
      el.hidden = !radio || el.dataset.forProvider !== radio.value;
    });
    const select = form.querySelector("select[name=hardware]");
    if (select && radio) {
      let firstVisible = null;
      select.querySelectorAll("option").forEach(function (opt) {
        const mine = opt.dataset.provider === radio.value;
        opt.hidden = !mine; opt.disabled = !mine;
        if (mine && !firstVisible) firstVisible = opt;
      });
      if (select.selectedOptions[0] && select.selectedOptions[0].disabled && firstVisible) select.value = firstVisible.value;
    }
  }
  // A poller that got 286 stays stopped; each new submit gets a fresh one (and a late reply of
  // the old one only ever swaps into the poller itself, never over the submit's answer).
  function rearm(form) {
    const old = document.getElementById("submit-progress");
    if (!old || !window.htmx) return;
    const fresh = old.cloneNode(true);
    old.replaceWith(fresh);
    htmx.process(fresh);
    if (window.stcloud && window.stcloud.startPolling) window.stcloud.startPolling(fresh);
  }
  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("submit-form");
    if (!form) return;
    sync(form);
    form.addEventListener("change", function (e) {
      if (e.target.name === "provider" || e.target.name === "delivery_type") sync(form);
    });
    form.addEventListener("htmx:beforeRequest", function (e) {
      if (e.detail.elt === form) rearm(form);
    });
  });
})();
