// Create Action wizard: shows one step at a time; the server gets the whole form at once.
"use strict";
(function () {
  const form = document.getElementById("wizard");
  if (!form) return;
  const steps = form.querySelectorAll("section.step");

  function show(step) {
    steps.forEach((s) => { s.hidden = s.dataset.step !== String(step); });
    form.dataset.step = String(step);
    const heading = form.querySelector(`section.step[data-step="${step}"] h2`);
    if (heading) heading.focus({ preventScroll: true });
  }

  function syncKind() {
    const checked = form.querySelector('input[name="type"]:checked');
    const kind = checked ? checked.value : "http";
    form.querySelectorAll(".kind").forEach((d) => { d.hidden = d.dataset.kind !== kind; });
  }

  function syncAuth() {
    const select = document.getElementById("auth_type");
    form.querySelectorAll(".auth").forEach((d) => { d.hidden = d.dataset.auth !== select.value; });
  }

  form.querySelectorAll("[data-go]").forEach((b) => {
    b.addEventListener("click", () => show(b.dataset.go));
  });
  form.querySelectorAll('input[name="type"]').forEach((r) => r.addEventListener("change", syncKind));
  document.getElementById("auth_type").addEventListener("change", syncAuth);
  steps.forEach((s) => s.querySelector("h2").setAttribute("tabindex", "-1"));
  syncKind();
  syncAuth();
  show(form.dataset.step || "1");
})();
