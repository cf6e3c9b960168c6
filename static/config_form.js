// The Submit page's config form: two tabs of one widget, the common SimpleTuner fields and the
// whole config as JSON (the advanced tab, and what the form submits). Tabs follow the WAI-ARIA
// tabs pattern: arrow keys / Home / End move between them, only the selected one is in the tab
// order. Editing a field rewrites its key in the JSON (keeping a "--key" spelling
// the config already uses); editing the JSON refills the fields. Fields that do not apply are
// hidden (data-applies: {"field": [values]} or {"field": {"not": [values]}}). Every change is
// checked by POST data-validate-url — the schema the submit API uses — and the errors are shown
// under their fields.
(function () {
  function init(editor) {
    const form = editor.closest("form") || document;
    const textarea = form.querySelector("textarea[name=config_json]");
    const inputs = Array.from(editor.querySelectorAll("[data-config-field]"));
    const status = editor.querySelector("#config-status");
    const jsonError = document.getElementById("config-json-error");
    const presets = JSON.parse(editor.dataset.presets || "{}");
    let timer = null, seq = 0;

    function parse() {
      const text = textarea.value.trim();
      if (!text) return {};
      try {
        const value = JSON.parse(text);
        if (value && typeof value === "object" && !Array.isArray(value)) return value;
        badJson("The config must be a JSON object ({...}).");
      } catch (e) {
        badJson("The JSON does not parse: " + e.message + ". The form shows the last valid config.");
      }
      return null;
    }
    function badJson(message) {
      clearTimeout(timer);
      seq++; // a check of the previous config that is still on its way must not say "valid"
      jsonError.textContent = message;
      textarea.setAttribute("aria-invalid", "true");
      status.textContent = "";
      status.dataset.state = "invalid-json";
    }
    function goodJson() {
      jsonError.textContent = "";
      textarea.removeAttribute("aria-invalid");
    }
    function keyOf(cfg, name) {
      for (const k of [name, "--" + name, name.replace(/_/g, "-"), "--" + name.replace(/_/g, "-")]) {
        if (Object.prototype.hasOwnProperty.call(cfg, k)) return k;
      }
      return name;
    }
    function valueOf(cfg, name) {
      const k = keyOf(cfg, name);
      return Object.prototype.hasOwnProperty.call(cfg, k) ? cfg[k] : null;
    }
    function applies(cfg, rules) {
      return Object.keys(rules).every(function (field) {
        let v = valueOf(cfg, field);
        if (v === undefined) v = null;
        const rule = rules[field];
        if (Array.isArray(rule)) return rule.indexOf(v) >= 0;
        return (rule.not || []).indexOf(v) < 0;
      });
    }
    function showApplicable(cfg) {
      editor.querySelectorAll("[data-applies]").forEach(function (wrap) {
        wrap.hidden = !applies(cfg, JSON.parse(wrap.dataset.applies));
      });
    }
    function showErrors(errors) {
      editor.querySelectorAll("[data-config-error]").forEach(function (el) { el.textContent = ""; });
      inputs.forEach(function (el) { el.removeAttribute("aria-invalid"); });
      errors.forEach(function (e) {
        const el = editor.querySelector('[data-config-error="' + e.field + '"]');
        if (el) el.textContent = e.message;
        const input = editor.querySelector('[data-config-field="' + e.field + '"]');
        if (input) input.setAttribute("aria-invalid", "true");
      });
      status.textContent = errors.length
        ? errors.length + (errors.length === 1 ? " problem: " : " problems: ") + errors.map(function (e) { return e.message; }).join("; ")
        : "The config's common fields are valid.";
      status.dataset.state = errors.length ? "invalid" : "valid";
    }
    function validate(cfg) {
      clearTimeout(timer);
      const mine = ++seq;
      status.dataset.state = "checking";
      timer = setTimeout(function () {
        fetch(editor.dataset.validateUrl, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "Accept": "application/json" },
          body: JSON.stringify({ config: cfg }),
        }).then(function (r) {
          return r.json().then(function (body) { return { ok: r.ok, body: body }; });
        }).then(function (res) {
          if (mine !== seq) return; // a newer check is on its way
          if (!res.ok) { status.textContent = res.body.detail || "The config could not be checked."; status.dataset.state = "error"; return; }
          showErrors(res.body.errors || []);
        }).catch(function () {
          if (mine === seq) { status.textContent = "The config could not be checked (no connection)."; status.dataset.state = "error"; }
        });
      }, 250);
    }
    function fill(cfg) {
      inputs.forEach(function (el) {
        if (el === document.activeElement) return; // never rewrite what the user is typing
        const v = valueOf(cfg, el.dataset.configField);
        el.value = v === null || v === undefined ? "" : String(v);
      });
    }
    function fromJson() {
      const cfg = parse();
      if (cfg === null) return;
      goodJson();
      fill(cfg);
      showApplicable(cfg);
      validate(cfg);
    }
    function write(cfg) {
      textarea.value = JSON.stringify(cfg, null, 2);
      goodJson();
      textarea.dispatchEvent(new Event("change", { bubbles: true })); // the estimate follows
      showApplicable(cfg);
      validate(cfg);
    }
    function fromField(el) {
      const cfg = parse();
      if (cfg === null) return; // the JSON does not parse: fix it first (the message says so)
      const name = el.dataset.configField, key = keyOf(cfg, name), raw = el.value.trim();
      if (raw === "") {
        delete cfg[key];
      } else if (el.dataset.kind === "integer" || el.dataset.kind === "number") {
        const n = Number(raw);
        cfg[key] = Number.isFinite(n) ? n : raw; // kept as typed: the check names the problem
      } else {
        cfg[key] = raw;
      }
      write(cfg);
    }
    function applyPreset() {
      const family = editor.querySelector("#config-preset").value;
      const cfg = parse();
      if (cfg === null || !presets[family]) return;
      cfg[keyOf(cfg, "model_family")] = family;
      Object.keys(presets[family]).forEach(function (name) { cfg[keyOf(cfg, name)] = presets[family][name]; });
      write(cfg);
      fill(cfg);
    }

    const tabs = Array.from(editor.querySelectorAll("[role=tab]"));
    function select(tab, focus) {
      tabs.forEach(function (t) {
        const on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
      if (focus) tab.focus();
    }
    tabs.forEach(function (tab, i) {
      tab.addEventListener("click", function () { select(tab, false); });
      tab.addEventListener("keydown", function (ev) {
        const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
        if (to === undefined) return;
        ev.preventDefault();
        select(tabs[(to + tabs.length) % tabs.length], true);
      });
    });

    inputs.forEach(function (el) {
      el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () { fromField(el); });
    });
    textarea.addEventListener("input", fromJson);
    editor.querySelector("#config-apply-preset").addEventListener("click", applyPreset);
    fromJson();
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-config-editor]").forEach(init);
  });
})();
