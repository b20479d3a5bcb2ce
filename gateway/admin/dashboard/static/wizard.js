// Create/Edit Action wizard, a progressive enhancement: the page works without it (every button
// posts the whole form and the server redisplays it). With it: one step at a time, rows added
// and removed in place, variables inserted at the cursor, JSON checked as it is typed, and the
// preview (the tool the model will see) and the Test step's fields kept live from the server.
// Text is only ever inserted with textContent or value, never parsed as HTML.
"use strict";
(function () {
  const form = document.getElementById("wizard");
  if (!form) return;
  const steps = form.querySelectorAll("section.step");
  const links = document.querySelectorAll("#wizard-steps [data-go]");

  // --- steps --------------------------------------------------------------------------------
  function show(step, focus) {
    steps.forEach((s) => { s.hidden = s.dataset.step !== String(step); });
    links.forEach((a) => {
      if (a.dataset.go === String(step)) a.setAttribute("aria-current", "step");
      else a.removeAttribute("aria-current");
    });
    form.dataset.step = String(step);
    document.querySelectorAll('[name="intent"][value^="show:"]').forEach((b) => {
      if (!b.classList.contains("refresh-inputs")) b.value = `show:${step}`;
    });
    const heading = form.querySelector(`section.step[data-step="${step}"] h2`);
    if (heading && focus) heading.focus({ preventScroll: true });
  }

  function syncKind() {
    const checked = form.querySelector('input[name="type"]:checked');
    const kind = checked ? checked.value : "http";
    form.querySelectorAll(".kind").forEach((d) => { d.hidden = d.dataset.kind !== kind; });
  }

  // Each request editor (the HTTP action's, a form's submit, a button's) has its own auth select.
  function syncAuth(select) {
    select.closest(".auth-editor").querySelectorAll(".auth").forEach((d) => {
      d.hidden = !d.dataset.auth.split(" ").includes(select.value);
    });
  }

  function syncClick() {
    const checked = form.querySelector('input[name="button_click"]:checked');
    const click = checked ? checked.value : "navigate";
    form.querySelectorAll(".click").forEach((d) => { d.hidden = d.dataset.click !== click; });
  }

  // --- rows -----------------------------------------------------------------------------------
  function numberRows(editor) {
    editor.querySelectorAll("[data-row]").forEach((row, i) => {
      row.querySelectorAll("input, select").forEach((el) => {
        el.id = el.id.replace(/-\d+-/, `-${i}-`);
        el.name = el.name.replace(/-\d+-/, `-${i}-`);
      });
      row.querySelectorAll("label").forEach((l) => {
        l.htmlFor = l.htmlFor.replace(/-\d+-/, `-${i}-`);
        l.textContent = l.dataset.label.replace("#", String(i + 1));
      });
      const remove = row.querySelector(".remove-row");
      remove.textContent = `Remove ${editor.dataset.noun.toLowerCase()} ${i + 1}`;
    });
  }

  function clearRow(row) {
    row.querySelectorAll("input").forEach((el) => {
      if (el.type === "checkbox") el.checked = false; else el.value = "";
    });
    row.querySelectorAll("select").forEach((el) => { el.selectedIndex = 0; });
  }

  function enableRows(editor) {
    const list = editor.querySelector(".row-list");
    editor.querySelectorAll(".remove-row").forEach((b) => { b.hidden = false; });
    editor.querySelector(".add-row").addEventListener("click", (event) => {
      event.preventDefault();
      const rows = list.querySelectorAll("[data-row]");
      const copy = rows[rows.length - 1].cloneNode(true);
      clearRow(copy);
      list.appendChild(copy);
      numberRows(editor);
      copy.querySelector("input, select").focus();
      schedule();
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest(".remove-row");
      if (!button) return;
      const rows = list.querySelectorAll("[data-row]");
      const row = button.closest("[data-row]");
      if (rows.length === 1) clearRow(row); else row.remove();
      numberRows(editor);
      editor.querySelector(".add-row").focus();
      schedule();
    });
  }

  // --- the variable picker ------------------------------------------------------------------
  let lastField = null;
  const picker = document.getElementById("var-picker");
  const insert = document.getElementById("var-insert");
  const pickerStatus = document.getElementById("picker-status");

  form.addEventListener("focusin", (event) => {
    const el = event.target;
    const texty = el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type === "text");
    if (texty && !el.closest(".test-inputs")) lastField = el;
  });

  function insertVariable() {
    if (!lastField || !picker.value) {
      pickerStatus.textContent = "Click into a text field first, then insert.";
      return;
    }
    const text = `{{${picker.value}}}`;
    const start = lastField.selectionStart ?? lastField.value.length;
    const end = lastField.selectionEnd ?? start;
    lastField.setRangeText(text, start, end, "end");
    lastField.focus();
    lastField.dispatchEvent(new Event("input", { bubbles: true }));
    const label = form.querySelector(`label[for="${lastField.id}"]`);
    pickerStatus.textContent = `Inserted ${text} into ${label ? label.textContent : "the field"}.`;
  }

  // The draft's own names: its arguments ({{args.NAME}}) and a form's fields ({{form.NAME}}).
  function syncGroup(label, names) {
    let group = picker.querySelector(`optgroup[label="${label}"]`);
    if (!names.length) {
      if (group) group.remove();
      return;
    }
    if (!group) {
      group = document.createElement("optgroup");
      group.label = label;
      picker.appendChild(group);
    }
    const selected = picker.value;
    group.replaceChildren(...names.map((n) => {
      const option = document.createElement("option");
      option.value = option.textContent = n;
      return option;
    }));
    if (selected) picker.value = selected;
  }

  // --- JSON checks ------------------------------------------------------------------------------
  function checkJson(area) {
    const status = document.getElementById(`${area.id}-check`);
    const text = area.value.trim();
    let message = "Empty.";
    let ok = true;
    if (text) {
      try { JSON.parse(text); message = "Valid JSON."; } catch (e) { ok = false; message = `Not valid JSON: ${e.message}`; }
    }
    status.textContent = message;
    status.classList.toggle("error", !ok);
    if (ok) area.removeAttribute("aria-invalid"); else area.setAttribute("aria-invalid", "true");
  }

  // --- the live preview and the Test step's fields ------------------------------------------------
  const previewStatus = document.getElementById("preview-status");
  let timer = null;
  let generation = 0;
  // Typed into the advanced view: keep it until an editor changes (then the editors win again).
  let rawEdited = false;

  function inputFor(spec, id, value) {
    if (spec.control === "select") {
      const select = document.createElement("select");
      const choices = spec.required ? spec.options : ["", ...spec.options];
      choices.forEach((o) => {
        const option = document.createElement("option");
        option.value = o;
        option.textContent = o || "(leave out)";
        select.appendChild(option);
      });
      select.value = value || "";
      return select;
    }
    const el = document.createElement(spec.control === "textarea" ? "textarea" : "input");
    if (spec.control === "number") { el.type = "number"; el.step = spec.step; }
    if (spec.control === "checkbox") { el.type = "checkbox"; el.checked = value === "on"; } else { el.value = value || ""; }
    return el;
  }

  function renderInputs(inputs) {
    const box = document.getElementById("w-inputs");
    const old = {};
    box.querySelectorAll("[name]").forEach((el) => { old[el.name] = el.type === "checkbox" ? (el.checked ? "on" : "") : el.value; });
    const legend = box.querySelector("legend");
    const parts = inputs.map((spec, i) => {
      const id = `w-in-${i + 1}`;
      const wrap = document.createElement("div");
      wrap.className = "test-input";
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = spec.name;
      const el = inputFor(spec, id, old[spec.field]);
      el.id = id;
      el.name = spec.field;
      el.setAttribute("aria-describedby", `${id}-hint`);
      const hint = document.createElement("p");
      hint.className = "hint";
      hint.id = `${id}-hint`;
      hint.textContent = spec.hint;
      if (spec.control === "checkbox") {
        const check = document.createElement("div");
        check.className = "check";
        check.append(el, label);
        wrap.append(check, hint);
      } else {
        wrap.append(label, el, hint);
      }
      return wrap;
    });
    if (!parts.length) {
      const none = document.createElement("p");
      none.className = "no-inputs";
      none.textContent = "This action uses no variables and takes no arguments.";
      parts.push(none);
    }
    box.replaceChildren(legend, ...parts);
  }

  function payload() {
    const data = new URLSearchParams();
    new FormData(form).forEach((value, key) => { if (key !== "intent") data.append(key, value); });
    return data;
  }

  async function refresh() {
    const mine = ++generation;
    let body;
    try {
      const response = await fetch("/actions/preview", { method: "POST", body: payload(), credentials: "same-origin" });
      body = await response.json();
    } catch (e) {
      previewStatus.textContent = "The preview could not be updated.";
      return;
    }
    if (mine !== generation) return;
    document.getElementById("preview-name").textContent = body.ok ? body.tool_name : "";
    document.getElementById("preview-description").textContent = body.ok ? body.description : "";
    document.getElementById("preview-parameters").textContent = body.ok ? body.parameters : "";
    previewStatus.textContent = body.ok ? "Up to date." : `Not ready: ${body.error}`;
    if (body.ok) {
      renderInputs(body.inputs);
      syncGroup("Arguments", body.arguments.map((n) => `args.${n}`));
      syncGroup("Form fields", body.form_fields.map((n) => `form.${n}`));
    }
    const raw = document.getElementById("definition_json");
    if (body.definition && !rawEdited && !document.getElementById("use_raw").checked) {
      raw.value = body.definition;
      checkJson(raw);
    }
    form.dataset.preview = String(mine);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }

  // --- wiring ------------------------------------------------------------------------------------
  form.querySelectorAll("[data-go]").forEach((b) => b.addEventListener("click", () => show(b.dataset.go, true)));
  links.forEach((a) => a.addEventListener("click", (event) => { event.preventDefault(); show(a.dataset.go, true); }));
  form.querySelectorAll('input[name="type"]').forEach((r) => r.addEventListener("change", syncKind));
  form.querySelectorAll('input[name="button_click"]').forEach((r) => r.addEventListener("change", syncClick));
  const authTypes = form.querySelectorAll("select.auth-type");
  authTypes.forEach((select) => select.addEventListener("change", () => syncAuth(select)));
  form.querySelectorAll("fieldset.rows").forEach(enableRows);
  ["body", "submit_body", "button_body", "definition_json"].forEach((id) => {
    const area = document.getElementById(id);
    area.addEventListener("input", () => checkJson(area));
    if (area.value.trim()) checkJson(area);
  });
  form.addEventListener("input", (event) => {
    if (event.target.closest(".test-inputs")) return;
    rawEdited = event.target.id === "definition_json" || (rawEdited && event.target.id === "use_raw");
    schedule();
  });
  form.addEventListener("change", (event) => { if (!event.target.closest(".test-inputs")) schedule(); });
  insert.hidden = false;
  insert.addEventListener("click", insertVariable);
  document.querySelectorAll(".refresh-preview, .refresh-inputs").forEach((b) => { b.hidden = true; });
  steps.forEach((s) => s.querySelector("h2").setAttribute("tabindex", "-1"));
  syncKind();
  syncClick();
  authTypes.forEach(syncAuth);
  show(form.dataset.step || "1", false);
  refresh();
})();
