// Live updates for dashboard pages, over /dashboard/live (authenticated by the staff session cookie).
//
// The page says what to watch in <script id="live-config" type="application/json">:
//   {"watch": "flow", "environment": 3, "flow": "onboarding", "version": 2}
//   {"watch": "person", "environment": 3, "person_key": "u-1", "since_seq": 17}
// Flow pages receive absolute step counts (recomputed by the server from SQL), so a
// reconnect just receives the right numbers again. Person pages resume from the last
// seq they show: the server sends what they missed, then live changes, once each.

const config = JSON.parse(document.getElementById("live-config").textContent);
const pill = document.getElementById("live-status");
// the highest seq up to which every change is shown: the flow and step streams may
// be at different points after a reconnect, so resuming from the largest seen could skip one
let lastSeq = config.since_seq ?? 0;
const seen = new Set();
let delay = 500;

// An attribute selector for any value: identifiers may hold `"`, `]` or `\`, which would
// end a quoted value early (querySelector then throws and the page stops following).
function withData(name, value) {
  return `[data-${name}="${CSS.escape(String(value))}"]`;
}

function setStatus(status) {
  if (!pill) return;
  pill.dataset.status = status;
  pill.textContent = { live: "live", connecting: "connecting", reconnecting: "reconnecting", "signed-out": "signed out" }[status] ?? status;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/dashboard/live`);
  socket.addEventListener("open", () => {
    delay = 500;
    if (config.watch === "flow") {
      socket.send(JSON.stringify({ action: "watch_flow", environment: config.environment, flow: config.flow, version: config.version }));
    } else {
      socket.send(JSON.stringify({ action: "watch_person", environment: config.environment, person_key: config.person_key, since_seq: lastSeq }));
    }
  });
  socket.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (event.event === "counts") {
      applyCounts(event.active);
      applyFunnel(event.steps ?? {}, event.instances ?? {});
      setStatus("live");
    } else if (event.event === "watching") {
      setStatus("live");
    } else if (event.event === "state_change") {
      applyChange(event.data);
      refreshWhy();
    } else if (event.event === "restarted") {
      location.reload(); // the person was deleted and created again: their log restarted
    }
  });
  socket.addEventListener("close", (close) => {
    if (close.code === 4401) {
      setStatus("signed-out");
      location.assign(`/dashboard/login/?next=${encodeURIComponent(location.pathname + location.search)}`);
      return;
    }
    if (close.code === 4403) {
      setStatus("closed");
      return;
    }
    setStatus("reconnecting");
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10_000);
  });
}

// -- flow page: counts per step ------------------------------------------------

function applyCounts(active) {
  for (const node of document.querySelectorAll("[data-step]")) {
    const n = String(active[node.dataset.step] ?? 0);
    if (node.dataset.active === n) continue;
    node.dataset.active = n;
    const count = node.querySelector("[data-count]");
    if (count) count.textContent = n;
    const label = node.getAttribute("aria-label");
    if (label) node.setAttribute("aria-label", label.replace(/: \d+ active now/, `: ${n} active now`));
    node.classList.add("bump");
    setTimeout(() => node.classList.remove("bump"), 600);
  }
}

function applyFunnel(steps, instances) {
  for (const [state, n] of Object.entries(instances)) {
    const kpi = document.querySelector(withData("kpi", state));
    if (kpi) kpi.textContent = String(n);
  }
  const chart = document.querySelector("svg.funnel");
  if (!chart) return;
  const width = Number(chart.dataset.barWidth);
  const top = Math.max(1, ...Object.values(steps).map((s) => s.reached));
  for (const row of chart.querySelectorAll("[data-funnel-step]")) {
    const step = steps[row.dataset.funnelStep] ?? { reached: 0, completed: 0 };
    const rate = step.reached ? `${Math.round((100 * step.completed) / step.reached)}%` : "—";
    row.querySelector('[data-bar="reached"]').setAttribute("width", ((width * step.reached) / top).toFixed(1));
    row.querySelector('[data-bar="completed"]').setAttribute("width", ((width * step.completed) / top).toFixed(1));
    // as the server's _median_shown: the median (as of loading) once someone completed the step
    const median = !step.reached ? "not reached" : step.completed ? row.dataset.median : "—";
    row.querySelector("[data-numbers]").textContent = `${step.completed} / ${step.reached} · ${rate} · ${median}`;
    const cells = document.querySelector(withData("row-step", row.dataset.funnelStep));
    if (cells) {
      cells.querySelector('[data-cell="reached"]').textContent = String(step.reached);
      cells.querySelector('[data-cell="completed"]').textContent = String(step.completed);
      cells.querySelector('[data-cell="rate"]').textContent = rate;
      cells.querySelector('[data-cell="median"]').textContent = median;
    }
  }
  for (const node of document.querySelectorAll("[data-row-step]")) {
    const cell = node.querySelector('[data-cell="active"]');
    const graphNode = document.querySelector(withData("step", node.dataset.rowStep));
    if (cell && graphNode) cell.textContent = graphNode.dataset.active;
  }
}

// -- person page: timeline and flow states ---------------------------------------

export function causeText(cause) {
  if (!cause || typeof cause !== "object") return "";
  let text;
  if (cause.kind === "call") text = cause.via ? `called via ${cause.via}` : "called";
  else if (cause.kind === "automatic") text = cause.transition ? `automatic transition ${cause.transition}` : "automatic transition";
  else if (cause.kind === "start_when") text = "started by its start condition";
  else text = String(cause.kind ?? "");
  if (cause.event) text += `, after event ${cause.event}`;
  if (cause.data) text += ", after a data change";
  return text;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timelineItem(e) {
  const li = element("li", "fresh");
  li.dataset.seq = e.seq;
  li.dataset.entity = e.entity;
  li.append(element("span", "seq", `#${e.seq}`));
  const what = element("div", "what");
  what.append(element("span", "entity", e.entity), " ", element("span", "mono strong", e.identifier), " ");
  const move = element("span", "move");
  const before = element("span", "state", e.previous_state);
  before.dataset.state = e.previous_state;
  const after = element("span", "state", e.state);
  after.dataset.state = e.state;
  move.append(before, " → ", after);
  what.append(move);
  if (e.entity === "step") what.append(" ", element("span", "muted small", `in ${e.flow}`));
  const cause = causeText(e.cause);
  if (cause) what.append(element("div", "cause", cause));
  li.append(what);
  const when = element("time", "when", e.occurred_at.slice(11, 19));
  when.dateTime = e.occurred_at;
  when.title = e.occurred_at;
  li.append(when);
  return li;
}

function applyChange(e) {
  const list = document.getElementById("timeline");
  if (!list || list.querySelector(`li${withData("seq", e.seq)}`)) return;
  const after = [...list.children].find((other) => Number(other.dataset.seq) < e.seq);
  list.insertBefore(timelineItem(e), after ?? null); // newest first
  document.getElementById("timeline-empty")?.remove();
  seen.add(e.seq);
  while (seen.has(lastSeq + 1)) seen.delete(++lastSeq);
  const count = document.getElementById("seq-count");
  if (count) count.textContent = String(Math.max(Number(count.textContent) || 0, e.seq));
  if (e.entity === "step") {
    const chip = document.querySelector(withData("step-instance", e.id));
    if (chip) {
      chip.dataset.state = e.state;
      chip.title = `${e.identifier}: ${e.state}`;
    } else {
      document.getElementById("new-flow-note")?.classList.remove("hidden");
    }
  } else {
    const badge = document.querySelector(`${withData("instance", e.id)} [data-instance-state]`);
    if (badge) {
      badge.dataset.state = e.state;
      badge.textContent = e.state;
    } else {
      document.getElementById("new-flow-note")?.classList.remove("hidden");
    }
  }
}

// "Why / why not" is drawn by the server: read again after a burst of changes, keeping
// the sections the reader opened open
let whyTimer = null;
function refreshWhy() {
  if (!document.querySelector("[data-why]")) return;
  clearTimeout(whyTimer);
  whyTimer = setTimeout(async () => {
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").querySelector("[data-why]");
      const shown = document.querySelector("[data-why]");
      if (!fresh || !shown) return;
      const open = new Set([...shown.querySelectorAll("details[open]")].map((d) => d.dataset.explain));
      for (const details of fresh.querySelectorAll("details")) details.open = open.has(details.dataset.explain);
      shown.replaceChildren(...fresh.childNodes);
    } catch {
      /* the next change tries again */
    }
  }, 300);
}

setStatus("connecting");
connect();
