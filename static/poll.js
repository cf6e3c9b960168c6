// Adaptive polling (issue 16 goal 4). An element with
//   hx-get="..." hx-trigger="stcloud:refresh" data-poll="<ms>" [data-poll-max="<ms>"] [data-etag="<tag>"]
// is refreshed every <ms> while the tab is visible, one request at a time: the next refresh is
// scheduled only when the previous answer arrived, so a slow server is never queued up on.
// - The last ETag seen (or data-etag from the page) goes out as If-None-Match; an answer of
//   304 Not Modified (or 204 No Content: "nothing new") swaps nothing and doubles the interval,
//   up to data-poll-max (default 8 x); any new content resets it. Errors back off the same way.
// - While the tab is hidden nothing is requested; when it shows again every poller refreshes
//   at once at its base interval.
// State is kept per element id (or URL), so it survives the element replacing itself.
(function () {
  const state = new Map();
  const timers = new WeakMap();

  function keyOf(el) { return el.id || el.getAttribute("hx-get") || ""; }
  function stateOf(el) {
    const key = keyOf(el);
    let st = state.get(key);
    if (!st) { st = { factor: 1, etag: null }; state.set(key, st); }
    if (el.dataset.etag && st.seeded !== el.dataset.etag) {  // the page's own tag for this element
      st.etag = 'W/"' + el.dataset.etag + '"';
      st.seeded = el.dataset.etag;
    }
    return st;
  }
  function isPoller(el) { return el && el.matches && el.matches("[data-poll]"); }

  function schedule(el) {
    clearTimeout(timers.get(el));
    const base = parseInt(el.dataset.poll, 10) || 2000;
    const max = parseInt(el.dataset.pollMax, 10) || base * 8;
    const delay = Math.min(max, base * stateOf(el).factor);
    timers.set(el, setTimeout(function () { fire(el); }, delay));
  }
  function fire(el) {
    if (!el.isConnected) return;
    if (document.hidden) return;  // visibilitychange fires every poller when the tab shows again
    if (window.htmx) window.htmx.trigger(el, "stcloud:refresh");
  }
  function scan(root) {
    if (!root || !root.querySelectorAll) return;
    const found = Array.from(root.querySelectorAll("[data-poll]"));
    if (isPoller(root)) found.push(root);
    found.forEach(function (el) { if (!timers.has(el)) schedule(el); });
  }

  document.addEventListener("htmx:configRequest", function (e) {
    const el = e.detail.elt;
    if (!isPoller(el)) return;
    const st = stateOf(el);
    if (st.etag) e.detail.headers["If-None-Match"] = st.etag;
  });
  // Before the swap (which may replace the element): learn from the answer.
  document.addEventListener("htmx:beforeSwap", function (e) {
    const el = e.detail.elt, xhr = e.detail.xhr;
    if (xhr && xhr.status === 304) e.detail.shouldSwap = false;
    if (!isPoller(el) || !xhr) return;
    const st = stateOf(el);
    if (xhr.status >= 200 && xhr.status < 300 && xhr.status !== 204) {
      st.factor = 1;
      st.etag = xhr.getResponseHeader("ETag") || null;
      st.seeded = null;
    } else {
      st.factor = Math.min(st.factor * 2, 64);
    }
  });
  // htmx fires no beforeSwap for some answers (network errors): back off there too.
  document.addEventListener("htmx:sendError", function (e) {
    if (isPoller(e.detail.elt)) stateOf(e.detail.elt).factor = Math.min(stateOf(e.detail.elt).factor * 2, 64);
  });
  // Not replaced (304, 204, an error, hx-swap="none"): schedule the next refresh of this element.
  document.addEventListener("htmx:afterRequest", function (e) {
    const el = e.detail.elt;
    if (isPoller(el) && el.isConnected) schedule(el);
  });
  // New content (the first page too): schedule its pollers.
  document.addEventListener("htmx:load", function (e) { scan(e.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { scan(document.body); });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) return;
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      stateOf(el).factor = 1;
      clearTimeout(timers.get(el));
      fire(el);
    });
  });
  window.stcloudPoll = { state: state };
})();
