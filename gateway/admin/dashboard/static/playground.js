// Playground: chats with one agent on the admin session (POST /playground/chat, which runs the
// proxy server-side) and renders its forms, buttons and confirmations. Text from the model, the
// customer or an API is only ever set as textContent, its bidi controls shown as escapes.
"use strict";
(function () {
  const root = document.getElementById("playground");
  if (!root) return;
  const agent = root.dataset.agent;
  const csrf = root.dataset.csrf;
  const transcript = document.getElementById("transcript");
  const statusEl = document.getElementById("pg-status");
  const convEl = document.getElementById("pg-conversation");
  const composer = document.getElementById("composer");
  const input = document.getElementById("pg-message");
  const field = (id) => document.getElementById(id);
  const leadRows = document.getElementById("pg-lead-rows");
  let messages = [];
  let conversationId = newId();
  let waiting = null; // {ids: [...], answers: Map(id -> content), forms: Map(id -> form)}
  let counter = 0;
  convEl.textContent = conversationId;

  function newId() {
    if (window.crypto && crypto.randomUUID) return "pg-" + crypto.randomUUID();
    return "pg-" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // Bidi embeddings, overrides and isolates would reorder the transcript: shown as \u202e.
  const BIDI = /[\u202a-\u202e\u2066-\u2069]/g;
  function visible(text) {
    return String(text).replace(BIDI, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = visible(text);
    if (cls) node.className = cls;
    return node;
  }

  // The conversation object: id, then whatever variables are filled in right now.
  function conversation() {
    const out = { id: conversationId };
    const lead = {};
    const email = field("pg-lead-email").value.trim();
    const name = field("pg-lead-name").value.trim();
    if (email) lead.email = email;
    if (name) lead.name = name;
    leadRows.querySelectorAll("li").forEach((row, i) => {
      const key = row.querySelector("input[data-part=name]").value.trim();
      const value = row.querySelector("input[data-part=value]").value.trim();
      if (!key && !value) return;
      if (!key) throw new Error(`Other lead fields: field ${i + 1} has a value but no name`);
      lead[key] = value;
    });
    if (Object.keys(lead).length) out.lead = lead;
    const userId = field("pg-user-id").value.trim();
    const channel = field("pg-channel").value.trim();
    if (userId) out.user_id = userId;
    if (channel) out.channel = channel;
    return out;
  }

  // One "name = value" row of the Other lead fields; labels say which row they belong to.
  function addLeadRow() {
    const n = leadRows.children.length + 1;
    const li = el("li");
    ["name", "value"].forEach((part) => {
      const wrap = el("div");
      const id = `pg-lead-${++counter}-${part}`;
      const label = el("label");
      label.htmlFor = id;
      label.appendChild(el("span", `Lead field ${n} `, "visually-hidden"));
      label.appendChild(document.createTextNode(part === "name" ? "Name" : "Value"));
      const input = el("input");
      input.id = id;
      input.autocomplete = "off";
      input.dataset.part = part;
      if (part === "name") input.setAttribute("aria-describedby", "pg-lead-hint");
      wrap.appendChild(label);
      wrap.appendChild(input);
      li.appendChild(wrap);
    });
    const remove = el("button", "Remove", "secondary");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove lead field ${n}`);
    remove.addEventListener("click", () => {
      li.remove();
      document.getElementById("pg-lead-add").focus();
    });
    li.appendChild(remove);
    leadRows.appendChild(li);
    return li;
  }

  function entry(who, text, cls) {
    const li = el("li", null, cls);
    li.appendChild(el("span", who, "who"));
    li.appendChild(el("span", text, "text"));
    transcript.appendChild(li);
    return li;
  }

  function setStatus(text) { statusEl.textContent = text || ""; }

  async function call() {
    let context;
    try { context = conversation(); } catch (e) {
      setStatus("Error: " + e.message);
      return { error: { message: e.message }, status: 0 };
    }
    setStatus("Waiting for the agent…");
    const response = await fetch("/playground/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
      body: JSON.stringify({ agent: agent, messages: messages, conversation: context }),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const err = (data && data.error) || { message: "HTTP " + response.status };
      setStatus("Error: " + err.message);
      return { error: err, status: response.status };
    }
    setStatus("");
    const message = data.choices[0].message;
    messages.push(message);
    const ext = data.actiongate || {};
    if (ext.conversation_id) {
      conversationId = ext.conversation_id;
      convEl.textContent = conversationId;
    }
    (ext.executions || []).forEach(showExecution);
    const li = message.content ? entry("Assistant", message.content, "assistant") : null;
    const ui = ext.ui || [];
    if (ui.length) renderUi(ui, li || entry("Assistant", "", "assistant"));
    return { data: data };
  }

  // An execution in the transcript: its outcome, status and time, and a link to its record.
  function showExecution(x) {
    const status = x.status_code === null || x.status_code === undefined ? "" : ` (${x.status_code})`;
    const li = entry("Action", `${x.action}: ${x.outcome}${status}`, "execution");
    li.dataset.outcome = x.outcome;
    if (typeof x.duration_ms === "number") li.appendChild(el("span", ` · ${Math.round(x.duration_ms)} ms`, "ms"));
    if (x.id) {
      const link = el("a", "Log record");
      link.href = "/logs/" + encodeURIComponent(x.id);
      link.setAttribute("aria-label", `Log record of ${x.action}`);
      li.appendChild(link);
    }
  }

  function renderUi(items, li) {
    waiting = { ids: items.map((u) => u.tool_call_id), answers: new Map(), forms: new Map() };
    items.forEach((u) => {
      const box = el("div", null, "widget");
      box.dataset.toolCallId = u.tool_call_id;
      if (u.kind === "form") box.appendChild(renderForm(u));
      else if (u.kind === "button") box.appendChild(renderButton(u));
      else if (u.kind === "confirm") box.appendChild(renderConfirm(u));
      li.appendChild(box);
    });
  }

  function renderForm(u) {
    const form = el("form");
    form.noValidate = true;
    form.setAttribute("aria-label", u.title || "Form");
    form.appendChild(el("h2", u.title || "Form"));
    (u.fields || []).forEach((f) => {
      const id = `f${++counter}-${f.name}`;
      const wrap = el("div", null, f.type === "checkbox" ? "check" : "field");
      const label = el("label", f.label || f.name);
      label.htmlFor = id;
      let control;
      if (f.type === "textarea") control = el("textarea");
      else if (f.type === "select") {
        control = el("select");
        control.appendChild(el("option", ""));
        (f.options || []).forEach((o) => {
          const option = el("option", o);
          option.value = String(o);
          control.appendChild(option);
        });
      } else {
        control = el("input");
        const types = { email: "email", number: "number", date: "date", checkbox: "checkbox", phone: "tel" };
        control.type = types[f.type] || "text";
      }
      control.id = id;
      control.name = f.name;
      if (f.required) control.required = true;
      if (f.value !== undefined && f.value !== null) {
        if (control.type === "checkbox") control.checked = Boolean(f.value);
        else control.value = visible(f.value);
      }
      const error = el("p", null, "error");
      error.id = id + "-error";
      error.setAttribute("role", "alert");
      error.dataset.field = f.name;
      control.setAttribute("aria-describedby", error.id);
      if (control.type === "checkbox") { wrap.appendChild(control); wrap.appendChild(label); }
      else { wrap.appendChild(label); wrap.appendChild(control); }
      wrap.appendChild(error);
      form.appendChild(wrap);
    });
    const submit = el("button", "Submit");
    submit.type = "submit";
    form.appendChild(submit);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const values = {};
      Array.from(form.elements).forEach((c) => {
        if (!c.name) return;
        if (c.type === "checkbox") values[c.name] = c.checked;
        else if (c.value !== "") values[c.name] = c.value;
      });
      answer(u.tool_call_id, values, form);
    });
    return form;
  }

  function renderButton(u) {
    const button = el("button", u.label);
    button.type = "button";
    button.addEventListener("click", () => {
      if (u.url) window.open(u.url, "_blank", "noopener,noreferrer");
      answer(u.tool_call_id, { clicked: true }, button);
    });
    return button;
  }

  function renderConfirm(u) {
    const box = el("div", null, "confirm");
    box.appendChild(el("p", u.message || u.title));
    if (u.method || u.url) box.appendChild(el("code", `${u.method || ""} ${u.url || ""}`));
    const allow = el("button", "Allow");
    const decline = el("button", "Decline");
    allow.type = decline.type = "button";
    allow.addEventListener("click", () => answer(u.tool_call_id, { confirmed: true }, box));
    decline.addEventListener("click", () => answer(u.tool_call_id, { confirmed: false }, box));
    box.appendChild(allow);
    box.appendChild(decline);
    return box;
  }

  function disable(node) {
    const controls = node.matches("button") ? [node] : node.querySelectorAll("input, select, textarea, button");
    controls.forEach((c) => { c.disabled = true; });
  }

  async function answer(callId, content, node) {
    const current = waiting;
    if (!current || !current.ids.includes(callId)) return;
    waiting.answers.set(callId, content);
    if (node.tagName === "FORM") waiting.forms.set(callId, node);
    if (waiting.answers.size < waiting.ids.length) { disable(node); return; }
    const added = waiting.ids.map((id) => ({
      role: "tool", tool_call_id: id, content: JSON.stringify(waiting.answers.get(id)),
    }));
    const before = messages.length;
    messages.push(...added);
    document.querySelectorAll(".widget .error").forEach((e) => { e.textContent = ""; });
    const result = await call();
    if (result.error) {
      messages.length = before; // nothing was stored: answer again
      const param = result.error.param;
      const form = current.forms.get(callId) || node;
      const target = param && form.querySelector ? form.querySelector(`.error[data-field="${CSS.escape(param)}"]`) : null;
      if (target) target.textContent = result.error.message;
      current.answers.delete(callId);
      return;
    }
    transcript.querySelectorAll(".widget").forEach((w) => {
      if (current.ids.includes(w.dataset.toolCallId)) disable(w);
    });
    if (waiting === current) waiting = null;
  }

  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    messages.push({ role: "user", content: text });
    entry("Customer", text, "user");
    const result = await call();
    if (result.error) messages.pop();
  });

  document.getElementById("pg-reset").addEventListener("click", () => {
    messages = [];
    waiting = null;
    conversationId = newId();
    convEl.textContent = conversationId;
    transcript.replaceChildren();
    setStatus("");
  });

  // Ready: the buttons work from now on (tests wait for this state, never for a time).
  document.getElementById("pg-send").disabled = false;
  document.getElementById("pg-reset").disabled = false;
  const add = document.getElementById("pg-lead-add");
  add.addEventListener("click", () => addLeadRow().querySelector("input").focus());
  add.disabled = false;
  root.dataset.ready = "true";
})();
