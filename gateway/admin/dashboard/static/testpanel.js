// An action's Test panel: remembers the last values run, per action, in this browser's
// localStorage (never on the server), and fills them into inputs the page left empty.
// Only the panel's own inputs are kept: variables and arguments, never the CSRF token.
"use strict";
(function () {
  const form = document.getElementById("test-form");
  if (!form) return;
  const key = `actiongate.test.${form.dataset.tool}`;
  const inputs = () => form.querySelectorAll('.test-inputs [name^="var:"], .test-inputs [name^="arg:"]');

  function load() {
    try { return JSON.parse(localStorage.getItem(key) || "{}"); } catch (e) { return {}; }
  }

  const saved = load();
  const posted = Array.from(inputs()).some((el) => (el.type === "checkbox" ? el.checked : el.value));
  if (!posted) {
    inputs().forEach((el) => {
      if (!(el.name in saved)) return;
      if (el.type === "checkbox") el.checked = saved[el.name] === "on"; else el.value = saved[el.name];
    });
  }

  form.addEventListener("submit", () => {
    const values = {};
    inputs().forEach((el) => { values[el.name] = el.type === "checkbox" ? (el.checked ? "on" : "") : el.value; });
    try { localStorage.setItem(key, JSON.stringify(values)); } catch (e) { /* storage full or disabled: nothing to remember */ }
  });
  form.dataset.ready = "true";
})();
