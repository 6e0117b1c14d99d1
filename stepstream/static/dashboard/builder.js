// The flow builder (docs/dashboard.md, "The builder"): edits a draft without JSON.
// Each step and transition has an editor; "Save draft" and "Publish" send the draft to
// the dashboard's builder API and show each problem beside the field its path names;
// conditions are checked as they are typed; each step's content is previewed live by the
// SDK's own renderer (stepstream-render.js's preview()) in the environment's theme.

import { preview } from "../stepstream-render.js";

const config = JSON.parse(document.getElementById("builder-config").textContent);
const form = document.getElementById("builder");
const stepsList = form.querySelector("[data-steps]");
const transitionsList = form.querySelector("[data-transitions]");
const statusLine = form.querySelector("[data-status]");
const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
const TYPES = ["", "modal", "tooltip", "banner", "hotspot", "checklist"];
const CHOICES = {
  "content.type": TYPES,
  type: ["manual", "automatic"],
  "content.target.placement": ["auto", "top", "bottom", "left", "right"],
  "content.dismiss": ["exit", "hide", "none"],
  "content.buttons.style": ["primary", "secondary", "link"],
  "preview-locale": [""], // filled with the step's locales as they are typed
};
const TEXTAREAS = new Set(["content.body", "content.target.fallbacks", "content.locales.body",
  "content.locales.buttons", "content.locales.items"]);
let serial = 0;

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function field(label, name, value, { hint, ...extra } = {}) {
  const id = `f${++serial}`;
  if (hint) extra["aria-describedby"] = `${id}-hint`;
  const input = CHOICES[name]
    ? el("select", { id, name, ...extra }, CHOICES[name].map(
        (t) => el("option", { value: t }, [t || (name === "content.type" ? "(no content)" : "default texts")])))
    : el(TEXTAREAS.has(name) ? "textarea" : "input", { id, name, autocomplete: "off", ...extra });
  if (TEXTAREAS.has(name)) input.rows = name === "content.body" ? 4 : 2;
  input.value = value ?? "";
  if (CHOICES[name] && !CHOICES[name].includes(value ?? "")) input.value = CHOICES[name][0];
  const parts = [el("label", { for: id }, [label]), input];
  if (hint) parts.push(el("small", { id: `${id}-hint`, class: "hint" }, [hint]));
  return el("p", { class: "field" }, parts);
}

function check(label, name, checked) {
  const id = `f${++serial}`;
  const input = el("input", { id, name, type: "checkbox" });
  input.checked = Boolean(checked);
  return el("p", { class: "field check" }, [input, el("label", { for: id }, [label])]);
}

// a list of rows inside a step's editor (buttons, checklist items, locales)
function rowList(kind, title, addLabel, make, rows) {
  const list = el("ol", { class: "rows", [`data-${kind}s`]: "" });
  const add = el("button", { type: "button", class: "small", "data-action": `add-${kind}` }, [addLabel]);
  const box = el("fieldset", { class: "group" }, [el("legend", {}, [title]), list, add]);
  const addRow = (data = {}) => {
    const row = el("li", { class: "row", [`data-${kind}`]: "" }, make(data));
    const remove = el("button", { type: "button", class: "small" }, [`Remove this ${kind}`]);
    remove.addEventListener("click", () => { row.remove(); box.dispatchEvent(new Event("input", { bubbles: true })); });
    row.append(remove);
    list.append(row);
    return row;
  };
  add.addEventListener("click", () => {
    addRow().querySelector("input, select, textarea").focus();
    box.dispatchEvent(new Event("input", { bubbles: true }));
  });
  for (const data of rows || []) addRow(data);
  return box;
}

function removeButton(item, what) {
  const button = el("button", { type: "button", class: "small" }, [`Remove this ${what}`]);
  button.addEventListener("click", () => { item.remove(); refreshStepIds(); });
  return button;
}

function addStep(step = {}) {
  const content = step.content || {};
  const target = content.target || {};
  const locales = Object.entries(content.locales || {}).map(([code, texts]) => ({ code, ...texts }));
  const targetBox = el("fieldset", { class: "group", "data-target": "" }, [
    el("legend", {}, ["Target (tooltip and hotspot)"]),
    field("Selector", "content.target.selector", target.selector, {
      class: "mono",
      hint: "A CSS selector of an element on your page, such as #checklist-card: in the browser, " +
        "right-click the element, Inspect, and use its id as #id (or a class as .name).",
    }),
    field("Fallback selectors (one a line)", "content.target.fallbacks", (target.fallbacks || []).join("\n"), { class: "mono" }),
    field("Only an element containing this text", "content.target.text", target.text),
    field("Wait for it (ms)", "content.target.wait_ms", target.wait_ms, { type: "number", min: "0", max: "60000", step: "100" }),
    field("Placement", "content.target.placement", target.placement),
  ]);
  const buttons = rowList("button", "Buttons", "Add a button", (b) => [
    field("Label", "content.buttons.label", b.label),
    field("Runs transition", "content.buttons.transition", b.transition, { list: "transition-ids" }),
    check("Completes the step instead (a final step)", "content.buttons.complete", b.action === "complete"),
    field("Style", "content.buttons.style", b.style),
  ], content.buttons);
  const items = rowList("item", "Checklist items", "Add an item", (i) => [
    field("Label", "content.items.label", i.label),
    field("Step", "content.items.step", i.step, { list: "step-ids" }),
  ], content.items);
  const localeRows = rowList("locale", "Translations", "Add a locale", (l) => [
    field("Locale (fr, pt-BR)", "content.locales.code", l.code),
    field("Title", "content.locales.title", l.title),
    field("Body (Markdown)", "content.locales.body", l.body),
    field("Button labels (one a line, in order)", "content.locales.buttons", (l.buttons || []).map((b) => b.label).join("\n")),
    field("Item labels (one a line, in order)", "content.locales.items", (l.items || []).map((b) => b.label).join("\n")),
  ], locales);
  const previewBox = el("div", { class: "preview", "data-preview": "", role: "group", "aria-label": "Preview" });
  const previewLocale = field("Preview in", "preview-locale", "");
  const item = el("li", { class: "editor card-inner step-editor", "data-step-editor": step.identifier || "" }, [
    el("div", { class: "step-fields" }, [
      field("Identifier", "identifier", step.identifier),
      field("Name", "name", step.name),
      field("Content type", "content.type", content.type),
      el("div", { "data-content-fields": "" }, [
        field("Title", "content.title", content.title),
        field("Body (Markdown)", "content.body", content.body),
        targetBox,
        field("Close control (dismiss)", "content.dismiss", content.dismiss),
        buttons, items, localeRows,
      ]),
    ]),
    el("div", { class: "step-preview" }, [el("p", { class: "muted small" }, ["Preview"]), previewLocale, previewBox]),
  ]);
  item.append(removeButton(item, "step"));
  item.querySelector("[name=identifier]").addEventListener("input", (e) => {
    item.dataset.stepEditor = e.target.value;
    refreshStepIds();
  });
  item.addEventListener("input", () => redraw(item));
  item.addEventListener("change", () => redraw(item));
  stepsList.append(item);
  refreshStepIds();
  redraw(item);
  return item;
}

// shows the fields that fit the content type and draws the preview again
function redraw(item) {
  const type = value(item, "content.type");
  item.querySelector("[data-content-fields]").hidden = !type;
  item.querySelector("[data-target]").hidden = type !== "tooltip" && type !== "hotspot";
  item.querySelector("[data-items]").closest("fieldset").hidden = type !== "checklist";
  for (const input of item.querySelectorAll("[name='content.locales.items']")) input.closest(".field").hidden = type !== "checklist";
  const hasButtons = item.querySelector("[data-button]") !== null;
  for (const input of item.querySelectorAll("[name='content.locales.buttons']")) input.closest(".field").hidden = !hasButtons;
  for (const row of item.querySelectorAll("[data-button]")) {
    const completes = row.querySelector("[name='content.buttons.complete']").checked;
    row.querySelector("[name='content.buttons.transition']").closest(".field").hidden = completes;
  }
  const select = item.querySelector("[name=preview-locale]");
  const codes = [...item.querySelectorAll("[name='content.locales.code']")].map((i) => i.value.trim()).filter(Boolean);
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, ["default texts"]), ...codes.map((c) => el("option", { value: c }, [c])));
  select.value = codes.includes(chosen) ? chosen : "";
  select.closest(".field").hidden = !codes.length;
  const box = item.querySelector("[data-preview]");
  const content = type ? stepContent(item) : null;
  if (!content) {
    box.replaceChildren(el("p", { class: "muted small" }, ["No content: this step shows nothing."]));
    return;
  }
  preview(box, content, { theme: config.theme || {}, locale: select.value, step: value(item, "identifier") });
}

function addTransition(t = {}) {
  const item = el("li", { class: "editor card-inner", "data-transition-editor": "" }, [
    field("Identifier", "identifier", t.identifier),
    field("From step", "from", t.from, { list: "step-ids" }),
    field("To step", "to", t.to, { list: "step-ids" }),
    field("Type", "type", t.type),
    field("Condition (CEL, optional)", "condition", t.condition, { class: "mono", "data-condition": "" }),
    field("After (automatic only: 30m, 2d; optional)", "after", t.after, { class: "mono" }),
  ]);
  item.append(removeButton(item, "transition"));
  item.querySelector("[name=identifier]").addEventListener("input", refreshStepIds);
  transitionsList.append(item);
  refreshStepIds();
  watchCondition(item.querySelector("[name=condition]"));
  return item;
}

// --- the flow drawn as it is edited -----------------------------------------------
// The flow page's own drawing (layout.py through _graph.html), asked of the server for
// the editors' steps and transitions when those change (not on every keystroke of content)

const graphHolder = form.querySelector("[data-graph-holder]");
let graphTimer = null;
let graphDrawn = null; // set once the editors hold what the page was drawn with
let graphAsked = 0;

function shape() {
  const pick = (list, names) => [...list.children].map((item) => names.map((n) => value(item, n)));
  return [pick(stepsList, ["identifier", "name"]), pick(transitionsList, ["identifier", "from", "to", "type"])];
}

function redrawGraph() {
  clearTimeout(graphTimer);
  graphTimer = setTimeout(async () => {
    const now = JSON.stringify(shape());
    if (now === graphDrawn) return;
    const asked = ++graphAsked;
    const [steps, transitions] = JSON.parse(now);
    const answer = await call({
      op: "graph",
      draft: {
        steps: steps.map(([identifier, name]) => ({ identifier, name })),
        transitions: transitions.map(([identifier, from, to, type]) => ({ identifier, from, to, type })),
      },
    });
    if (asked !== graphAsked || answer.status !== 200) return; // a later one is on its way
    graphHolder.innerHTML = answer.body.html; // the server's template: escaped there
    graphDrawn = now;
  }, 120);
}

function refreshStepIds() {
  const options = (list) => [...list.children].map((i) => i.querySelector("[name=identifier]").value.trim())
    .filter(Boolean).map((v) => el("option", { value: v }));
  document.getElementById("step-ids").replaceChildren(...options(stepsList));
  document.getElementById("transition-ids").replaceChildren(...options(transitionsList));
  redrawGraph();
}

function value(scope, name) {
  return scope.querySelector(`[name="${name}"]`).value.trim();
}

const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

// a step's content as the editor holds it (fields left empty are left out)
function stepContent(item) {
  const type = value(item, "content.type");
  if (!type) return undefined;
  const content = { type };
  for (const key of ["title", "body"]) if (value(item, `content.${key}`)) content[key] = value(item, `content.${key}`);
  if (type === "tooltip" || type === "hotspot") {
    const target = { selector: value(item, "content.target.selector") };
    const fallbacks = lines(item.querySelector("[name='content.target.fallbacks']").value);
    if (fallbacks.length) target.fallbacks = fallbacks;
    if (value(item, "content.target.text")) target.text = value(item, "content.target.text");
    const wait = value(item, "content.target.wait_ms");
    if (wait) target.wait_ms = /^\d+$/.test(wait) ? Number(wait) : wait;
    target.placement = value(item, "content.target.placement");
    if (target.selector || fallbacks.length) content.target = target;
  }
  content.dismiss = value(item, "content.dismiss");
  const buttons = [...item.querySelectorAll("[data-button]")].map((row) => {
    const b = { label: value(row, "content.buttons.label"), style: value(row, "content.buttons.style") };
    if (row.querySelector("[name='content.buttons.complete']").checked) b.action = "complete";
    else if (value(row, "content.buttons.transition")) b.transition = value(row, "content.buttons.transition");
    return b;
  });
  if (buttons.length) content.buttons = buttons;
  if (type === "checklist") {
    content.items = [...item.querySelectorAll("[data-item]")].map((row) => ({
      label: value(row, "content.items.label"), step: value(row, "content.items.step") }));
  }
  const locales = {};
  for (const row of item.querySelectorAll("[data-locale]")) {
    const texts = {};
    if (content.title !== undefined) texts.title = value(row, "content.locales.title");
    if (content.body !== undefined) texts.body = value(row, "content.locales.body");
    for (const key of ["buttons", "items"]) {
      if (content[key]?.length) texts[key] = lines(row.querySelector(`[name='content.locales.${key}']`).value).map((label) => ({ label }));
    }
    locales[value(row, "content.locales.code")] = texts;
  }
  if (Object.keys(locales).length) content.locales = locales;
  return content;
}

function draft() {
  const body = {
    identifier: form.querySelector("#flow-identifier").value.trim(),
    steps: [...stepsList.children].map((item) => {
      const step = { identifier: value(item, "identifier") };
      if (value(item, "name")) step.name = value(item, "name");
      const content = stepContent(item);
      if (content) step.content = content;
      return step;
    }),
    transitions: [...transitionsList.children].map((item) => {
      const t = { identifier: value(item, "identifier"), from: value(item, "from"),
        to: value(item, "to"), type: value(item, "type") };
      const condition = value(item, "condition");
      if (condition) t.condition = condition;
      const after = value(item, "after");
      if (after) t.after = after;
      return t;
    }),
  };
  const name = form.querySelector("#flow-name").value.trim();
  if (name) body.name = name;  // left out when empty: a blank name is refused
  const startWhen = form.querySelector("#flow-start-when").value.trim();
  if (startWhen) body.start_when = startWhen;
  const priority = form.querySelector("#flow-priority").value.trim();
  if (priority) body.priority = /^-?\d+$/.test(priority) ? Number(priority) : priority;
  return body;
}

// --- problems beside their fields ---------------------------------------------

function clearProblems(scope = form) {
  for (const node of scope.querySelectorAll("[data-problem]")) node.remove();
  for (const node of scope.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showProblem(anchor, sentence) {
  const id = `p${++serial}`;
  const note = el("span", { class: "problem", "data-problem": "", id, role: "alert" }, [sentence]);
  if (anchor.matches("input, select, textarea")) {
    anchor.setAttribute("aria-invalid", "true");
    anchor.setAttribute("aria-describedby", id);
    anchor.closest(".field").append(note);
  } else {
    anchor.append(note);
  }
}

// "steps[2].content.buttons[1].label: ..." names the third step's editor, its second
// button's label field; an unknown field falls back to its row, then its editor
const PATH = /^(steps|transitions)\[(\d+)\]((?:\.[\w-]+|\[\d+\])*)|^(identifier|name|start_when|priority)\b/;

function placeProblem(sentence) {
  const m = PATH.exec(sentence) || /\b(transitions|steps)\[(\d+)\]/.exec(sentence);
  let anchor = form.querySelector("[data-problems-general]");
  if (m && m[4]) {
    anchor = form.querySelector(`[name="${m[4]}"]`);
  } else if (m) {
    const list = m[1] === "steps" ? stepsList : transitionsList;
    const item = list.children[Number(m[2])];
    if (item) anchor = inside(item, (m[3] || "").replace(/^\./, ""), sentence);
  }
  showProblem(anchor, sentence);
}

function inside(item, path, sentence) {
  const row = /^content\.(buttons|items)\[(\d+)\](?:\.(\w+))?/.exec(path);
  if (row) {
    const kind = row[1] === "buttons" ? "button" : "item";
    const found = item.querySelectorAll(`[data-${kind}]`)[Number(row[2])];
    const name = row[3] === "action" ? "content.buttons.complete" : `content.${row[1]}.${row[3]}`;
    return (found && row[3] && found.querySelector(`[name="${name}"]`)) || found || item;
  }
  const locale = /^content\.locales\.([\w-]+)(?:\.(\w+))?/.exec(path);
  if (locale) {
    const found = [...item.querySelectorAll("[data-locale]")]
      .find((r) => value(r, "content.locales.code") === locale[1]);
    return (found && found.querySelector(`[name="content.locales.${locale[2] || "code"}"]`)) || found || item;
  }
  const name = path.replace(/\[\d+\].*$/, "");
  // "transitions[0] ('next') names unknown step 'x'": beside the end that names it
  const unknown = /unknown step '(.*)'/.exec(sentence);
  const end = unknown && [...item.querySelectorAll("[name=from], [name=to]")]
    .find((input) => input.value.trim() === unknown[1]);
  const named = name && item.querySelector(`[name="${name}"]`);
  if (named && named.closest("[hidden]")) return item.querySelector("[name='content.type']");
  return named || end || (path.startsWith("content") && item.querySelector("[name='content.type']")) || item;
}

// --- conditions checked while typing --------------------------------------------

async function call(body) {
  const answer = await fetch(config.api, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  return { status: answer.status, body: await answer.json() };
}

function watchCondition(input) {
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const holder = input.closest(".field");
      clearProblems(holder);
      if (!input.value.trim()) return;
      const { body } = await call({ op: "check", condition: input.value });
      if (!body.ok) for (const e of body.errors) showProblem(input, e);
    }, 250);
  });
}

// --- save and publish -----------------------------------------------------------

// The draft this page last read or saved, by its ETag: each save sends it back, and a save
// over a revision someone else saved since is refused (409) instead of overwriting it.
const saved = { identifier: config.flow || "", etag: config.etag || null };
const conflictBox = form.querySelector("[data-conflict]");
let reloadHref = null;

function showConflict(body) {
  conflictBox.querySelector("[data-conflict-text]").textContent = body.conflict;
  reloadHref = body.reload || null;
  conflictBox.hidden = false;
}

async function send(op) {
  clearProblems();
  conflictBox.hidden = true;
  statusLine.textContent = op === "publish" ? "Publishing…" : "Saving…";
  const body = draft();
  const etag = body.identifier === saved.identifier ? saved.etag : null;
  const answer = await call({ op, draft: body, etag });
  if (answer.body.etag) Object.assign(saved, { identifier: body.identifier, etag: answer.body.etag });
  if (answer.status === 409) {
    showConflict(answer.body);
    statusLine.textContent = "Not saved: someone else changed this draft.";
    return;
  }
  const problems = answer.body.problems || answer.body.errors || [];
  for (const sentence of problems) placeProblem(sentence);
  if (op === "publish" && answer.status === 201) {
    statusLine.textContent = `Published version ${answer.body.version}.`;
    window.location.assign(answer.body.href);
    return;
  }
  statusLine.textContent =
    answer.status >= 400 && !answer.body.etag ? "Not saved: see the problems." :
    problems.length ? `Draft saved; ${problems.length} problem(s) before it can publish.` :
    "Draft saved; it can be published.";
}

form.querySelector("[data-action=reload-draft]").addEventListener("click", () => {
  const here = reloadHref && new URL(reloadHref, window.location.href).pathname === window.location.pathname;
  if (reloadHref && !here) window.location.assign(reloadHref);
  else window.location.reload();
});
form.querySelector("[data-action=add-step]").addEventListener("click", () =>
  addStep().querySelector("[name=identifier]").focus());
form.querySelector("[data-action=add-transition]").addEventListener("click", () =>
  addTransition().querySelector("[name=identifier]").focus());
form.querySelector("[data-action=save-draft]").addEventListener("click", () => send("save"));
form.querySelector("[data-action=publish]").addEventListener("click", () => send("publish"));
form.addEventListener("submit", (e) => e.preventDefault());
form.addEventListener("input", redrawGraph);
form.addEventListener("change", redrawGraph);

// --- import and export as JSON ---------------------------------------------------

const jsonBox = form.querySelector("[name=json]");

function load(definition) {
  form.querySelector("#flow-identifier").value = definition.identifier || config.flow || "";
  form.querySelector("#flow-name").value = definition.name || "";
  form.querySelector("#flow-start-when").value = definition.start_when || "";
  form.querySelector("#flow-priority").value = definition.priority ?? "";
  stepsList.replaceChildren();
  transitionsList.replaceChildren();
  for (const step of definition.steps || []) addStep(step);
  for (const t of definition.transitions || []) addTransition(t);
}

form.querySelector("[data-action=export-json]").addEventListener("click", () => {
  clearProblems(jsonBox.closest(".field"));
  jsonBox.value = JSON.stringify(draft(), null, 2);
  const link = form.querySelector("[data-download]");
  link.href = URL.createObjectURL(new Blob([jsonBox.value], { type: "application/json" }));
  link.download = `${draft().identifier || "flow"}.json`;
  link.hidden = false;
  statusLine.textContent = "The flow is in the JSON box below the buttons.";
});
form.querySelector("[data-action=import-json]").addEventListener("click", () => {
  clearProblems(jsonBox.closest(".field"));
  let definition;
  try {
    definition = JSON.parse(jsonBox.value);
    if (!definition || typeof definition !== "object" || Array.isArray(definition)) throw new Error("not an object");
  } catch (e) {
    showProblem(jsonBox, `json: this is not a flow's JSON object (${e.message}); paste what Export gives.`);
    return;
  }
  if (config.flow && definition.identifier && definition.identifier !== config.flow) {
    showProblem(jsonBox, `json: this page edits '${config.flow}'; the JSON is '${definition.identifier}'. Use New flow for another.`);
    return;
  }
  load(definition);
  statusLine.textContent = "Imported; save the draft or publish to keep it.";
});
form.querySelector("[data-action=upload-json]").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (file) jsonBox.value = await file.text();
});

load(config.draft || {});
clearTimeout(graphTimer); // the page came with this draft drawn
graphDrawn = JSON.stringify(shape());
watchCondition(form.querySelector("#flow-start-when"));
