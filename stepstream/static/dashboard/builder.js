// The flow builder (docs/dashboard.md, "The builder"): edits a draft without JSON.
// Each step and transition has an editor; "Save draft" and "Publish" send the draft to
// the dashboard's builder API and show each problem beside the field its path names;
// conditions are checked as they are typed.

const config = JSON.parse(document.getElementById("builder-config").textContent);
const form = document.getElementById("builder");
const stepsList = form.querySelector("[data-steps]");
const transitionsList = form.querySelector("[data-transitions]");
const statusLine = form.querySelector("[data-status]");
const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
const TYPES = ["", "modal", "tooltip", "banner", "hotspot", "checklist"];
let serial = 0;

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function field(label, name, value, extra = {}) {
  const id = `f${++serial}`;
  const input =
    name === "content.type" || name === "type"
      ? el("select", { id, name }, (name === "type" ? ["manual", "automatic"] : TYPES).map(
          (t) => el("option", { value: t }, [t || "(no content)"])))
      : el(name === "content.body" ? "textarea" : "input", { id, name, autocomplete: "off", ...extra });
  input.value = value ?? "";
  if (name === "type" && !value) input.value = "manual";
  return el("p", { class: "field" }, [el("label", { for: id }, [label]), input]);
}

function removeButton(item, what) {
  const button = el("button", { type: "button", class: "small" }, [`Remove this ${what}`]);
  button.addEventListener("click", () => { item.remove(); refreshStepIds(); });
  return button;
}

function addStep(step = {}) {
  const content = step.content || {};
  const item = el("li", { class: "editor card-inner", "data-step-editor": step.identifier || "" }, [
    field("Identifier", "identifier", step.identifier),
    field("Name", "name", step.name),
    field("Content type", "content.type", content.type),
    field("Title", "content.title", content.title),
    field("Body (Markdown)", "content.body", content.body),
    field("Target selector", "content.target.selector", content.target?.selector, { class: "mono" }),
  ]);
  item.append(removeButton(item, "step"));
  item.querySelector("[name=identifier]").addEventListener("input", (e) => {
    item.dataset.stepEditor = e.target.value;
    refreshStepIds();
  });
  stepsList.append(item);
  refreshStepIds();
  return item;
}

function addTransition(t = {}) {
  const item = el("li", { class: "editor card-inner", "data-transition-editor": "" }, [
    field("Identifier", "identifier", t.identifier),
    field("From step", "from", t.from, { list: "step-ids" }),
    field("To step", "to", t.to, { list: "step-ids" }),
    field("Type", "type", t.type),
    field("Condition (CEL, optional)", "condition", t.condition, { class: "mono", "data-condition": "" }),
  ]);
  item.append(removeButton(item, "transition"));
  transitionsList.append(item);
  watchCondition(item.querySelector("[name=condition]"));
  return item;
}

function refreshStepIds() {
  const list = document.getElementById("step-ids");
  list.replaceChildren(...[...stepsList.querySelectorAll("[name=identifier]")]
    .map((i) => i.value).filter(Boolean).map((v) => el("option", { value: v })));
}

function value(scope, name) {
  return scope.querySelector(`[name="${name}"]`).value.trim();
}

function draft() {
  const body = {
    identifier: form.querySelector("#flow-identifier").value.trim(),
    steps: [...stepsList.children].map((item) => {
      const step = { identifier: value(item, "identifier") };
      if (value(item, "name")) step.name = value(item, "name");
      const type = value(item, "content.type");
      if (type) {
        // empty texts are left out: publish refuses an empty title or body but not a missing one
        step.content = { type };
        for (const key of ["title", "body"]) {
          if (value(item, `content.${key}`)) step.content[key] = value(item, `content.${key}`);
        }
        const selector = value(item, "content.target.selector");
        if (selector) step.content.target = { selector };
      }
      return step;
    }),
    transitions: [...transitionsList.children].map((item) => {
      const t = { identifier: value(item, "identifier"), from: value(item, "from"),
        to: value(item, "to"), type: value(item, "type") };
      const condition = value(item, "condition");
      if (condition) t.condition = condition;
      return t;
    }),
  };
  const name = form.querySelector("#flow-name").value.trim();
  if (name) body.name = name;  // left out when empty: a blank name is refused
  const startWhen = form.querySelector("#flow-start-when").value.trim();
  if (startWhen) body.start_when = startWhen;
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

// "steps[2].content.title: ..." names steps' third editor, its content.title field
const PATH = /^(steps|transitions)\[(\d+)\](?:\.([\w.]+))?|^(identifier|name|start_when)\b/;

function placeProblem(sentence) {
  const m = PATH.exec(sentence) || /\b(transitions|steps)\[(\d+)\]/.exec(sentence);
  let anchor = form.querySelector("[data-problems-general]");
  if (m && m[4]) {
    anchor = form.querySelector(`[name="${m[4]}"]`);
  } else if (m) {
    const list = m[1] === "steps" ? stepsList : transitionsList;
    const item = list.children[Number(m[2])];
    if (item) {
      const name = (m[3] || "").replace(/^content\.target\..*/, "content.target.selector");
      // "transitions[0] ('next') names unknown step 'x'": beside the end that names it
      const unknown = /unknown step '(.*)'/.exec(sentence);
      const end = unknown && [...item.querySelectorAll("[name=from], [name=to]")]
        .find((input) => input.value.trim() === unknown[1]);
      anchor = (name && item.querySelector(`[name="${name}"]`)) || end || item;
    }
  }
  showProblem(anchor, sentence);
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

async function send(op) {
  clearProblems();
  statusLine.textContent = op === "publish" ? "Publishing…" : "Saving…";
  const { status, body } = await call({ op, draft: draft() });
  const problems = body.problems || body.errors || [];
  for (const sentence of problems) placeProblem(sentence);
  if (op === "publish" && status === 201) {
    statusLine.textContent = `Published version ${body.version}.`;
    window.location.assign(body.href);
    return;
  }
  statusLine.textContent =
    status >= 400 ? "Not saved: see the problems." :
    problems.length ? `Draft saved; ${problems.length} problem(s) before it can publish.` :
    "Draft saved; it can be published.";
}

form.querySelector("[data-action=add-step]").addEventListener("click", () =>
  addStep().querySelector("[name=identifier]").focus());
form.querySelector("[data-action=add-transition]").addEventListener("click", () =>
  addTransition().querySelector("[name=identifier]").focus());
form.querySelector("[data-action=save-draft]").addEventListener("click", () => send("save"));
form.querySelector("[data-action=publish]").addEventListener("click", () => send("publish"));
form.addEventListener("submit", (e) => e.preventDefault());

const start = config.draft || {};
form.querySelector("#flow-identifier").value = start.identifier || config.flow || "";
form.querySelector("#flow-name").value = start.name || "";
form.querySelector("#flow-start-when").value = start.start_when || "";
watchCondition(form.querySelector("#flow-start-when"));
for (const step of start.steps || []) addStep(step);
for (const t of start.transitions || []) addTransition(t);
