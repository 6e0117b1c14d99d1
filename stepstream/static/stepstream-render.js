// Stepstream content renderer: shows what a person's active steps carry (`content`:
// modal, tooltip, banner, hotspot, checklist) and follows their state live.
// Loaded by `client.render()` (stepstream.js) with a dynamic import, so a page
// that never calls it loads none of this. Contract: docs/clients.md, "Rendering content".
//
// Every piece is a `<stepstream-content>` element with an open shadow root: the host
// page's CSS cannot reach inside, and its texts are set with textContent only (the
// Markdown below builds DOM nodes; raw HTML in content is shown as text, never parsed).

import {
  autoUpdate,
  computePosition,
  flip,
  offset,
  shift,
} from "./vendor/floating-ui/floating-ui.dom.browser.min.js";

const TAG = "stepstream-content";
const DEFAULT_WAIT_MS = 5000;
const MAX_WAIT_MS = 60000;
const FALLBACKS = {
  top: ["bottom", "right", "left"],
  bottom: ["top", "right", "left"],
  left: ["right", "bottom", "top"],
  right: ["left", "bottom", "top"],
};
const SAFE_LINK = /^(https?:|mailto:)/i;

// -- Markdown ---------------------------------------------------------------

/**
 * Inline Markdown (`code`, **strong**, *em* or _em_, [text](url)) appended to `parent`
 * as DOM nodes. Links other than http, https and mailto stay text.
 * @param {Node} parent @param {string} text
 */
function inline(parent, text) {
  const doc = parent.ownerDocument ?? document;
  let plain = "";
  const flush = () => {
    if (plain) parent.append(doc.createTextNode(plain));
    plain = "";
  };
  // a delimiter with no later occurrence cannot close: skip its pattern (no quadratic scans)
  const last = (d) => text.lastIndexOf(d);
  const closes = {};
  for (const d of ["`", "**", "__", "*", "_", ")"]) closes[d] = last(d);
  const can = (d, at) => closes[d] > at;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (!"`*_[\\".includes(c)) {
      plain += c;
      i += 1;
      continue;
    }
    const rest = text.slice(i);
    const two = text.slice(i, i + 2);
    let m;
    if (c === "`" && can("`", i) && (m = /^`([^`]+)`/.exec(rest))) {
      flush();
      const code = doc.createElement("code");
      code.textContent = m[1];
      parent.append(code);
    } else if (
      (two === "**" || two === "__") &&
      can(two, i + 1) &&
      (m = /^(\*\*|__)(?=\S)([\s\S]*?\S)\1/.exec(rest))
    ) {
      flush();
      const strong = doc.createElement("strong");
      inline(strong, m[2]);
      parent.append(strong);
    } else if (
      (c === "*" || c === "_") &&
      can(c, i) &&
      (m = /^([*_])(?=\S)([\s\S]*?\S)\1/.exec(rest))
    ) {
      flush();
      const em = doc.createElement("em");
      inline(em, m[2]);
      parent.append(em);
    } else if (c === "[" && can(")", i) && (m = /^\[([^\]]+)\]\(\s*([^)\s]+)\s*\)/.exec(rest))) {
      if (SAFE_LINK.test(m[2])) {
        flush();
        const a = doc.createElement("a");
        a.href = m[2];
        if (!/^mailto:/i.test(m[2])) {
          a.target = "_blank";
          a.rel = "noopener noreferrer";
        }
        inline(a, m[1]);
        parent.append(a);
      } else {
        plain += m[0]; // an unsafe link is shown as the text it is
      }
    } else if ((m = /^\\([\\`*_[\]()#+\-.!])/.exec(rest))) {
      plain += m[1];
    } else {
      plain += text[i];
      i += 1;
      continue;
    }
    i += m[0].length;
  }
  flush();
}

/**
 * A small, safe Markdown: paragraphs (blank lines), `-`/`*`/`1.` lists, and the inline
 * forms above. Returns a DocumentFragment; never parses HTML.
 * @param {string} source @param {Document} [doc]
 * @returns {DocumentFragment}
 */
export function markdown(source, doc = document) {
  const out = doc.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  let list = null;
  const endParagraph = () => {
    if (!paragraph.length) return;
    const p = doc.createElement("p");
    inline(p, paragraph.join(" "));
    out.append(p);
    paragraph = [];
  };
  for (const line of lines) {
    const item = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line);
    if (item) {
      endParagraph();
      const kind = item[1] ? "ul" : "ol";
      if (!list || list.localName !== kind) {
        list = doc.createElement(kind);
        out.append(list);
      }
      const li = doc.createElement("li");
      inline(li, item[3]);
      list.append(li);
    } else if (!line.trim()) {
      endParagraph();
      list = null;
    } else if (list && /^\s+/.test(line)) {
      list.lastChild.append(doc.createTextNode(" "));
      inline(list.lastChild, line.trim()); // a list item's continuation line
    } else {
      list = null;
      paragraph.push(line.trim());
    }
  }
  endParagraph();
  return out;
}

// -- styles -----------------------------------------------------------------

const v = (name, fallback) => `var(--stepstream-${name}, ${fallback})`;
const CSS = `
:host { all: initial; display: block; }
* { box-sizing: border-box; }
.box { font-family: ${v("font-family", "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif")};
  font-size: ${v("font-size", "15px")}; line-height: 1.45; color: ${v("color-text", "#111827")};
  background: ${v("color-background", "#ffffff")}; border: 1px solid ${v("color-border", "#e5e7eb")};
  border-radius: ${v("radius", "8px")}; padding: ${v("spacing", "16px")};
  box-shadow: 0 10px 30px #0003; position: relative; text-align: left; }
.box:focus { outline: none; }
h2 { font-size: 1.1em; margin: 0 28px 6px 0; font-weight: 650; }
.body > :first-child { margin-top: 0; } .body > :last-child { margin-bottom: 0; }
p, ul, ol { margin: 0 0 .6em; } ul, ol { padding-left: 1.3em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em;
  background: #0000000f; border-radius: 4px; padding: 1px 4px; }
a { color: ${v("color-link", "#2563eb")}; }
.buttons { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; justify-content: flex-end; }
button { font: inherit; font-size: .95em; cursor: pointer; border-radius: ${v("radius", "8px")};
  padding: 7px 14px; border: 1px solid ${v("color-primary", "#2563eb")}; margin: 0;
  background: ${v("color-primary", "#2563eb")}; color: ${v("color-on-primary", "#ffffff")};
  text-transform: none; letter-spacing: normal; width: auto; height: auto; }
button.secondary { background: transparent; color: ${v("color-primary", "#2563eb")}; }
button.link { background: transparent; border-color: transparent; color: ${v("color-primary", "#2563eb")};
  text-decoration: underline; padding-left: 4px; padding-right: 4px; }
button:disabled { opacity: .6; cursor: default; }
button:focus-visible, a:focus-visible, .marker:focus-visible { outline: 2px solid ${v("color-primary", "#2563eb")}; outline-offset: 2px; }
button.close { position: absolute; top: 8px; right: 8px; width: 28px; height: 28px; padding: 0;
  border: 0; background: transparent; color: ${v("color-muted", "#6b7280")}; font-size: 20px; line-height: 28px; }
.error { color: #b91c1c; font-size: .9em; margin-top: 8px; }
.backdrop { position: fixed; inset: 0; display: grid; place-items: center; padding: 16px;
  background: ${v("color-backdrop", "rgba(17, 24, 39, 0.5)")}; z-index: ${v("z-index", "2147483000")}; }
.modal .box { width: min(480px, 100%); max-height: calc(100vh - 32px); overflow: auto; }
.floating { position: fixed; top: 0; left: 0; width: max-content; max-width: min(340px, calc(100vw - 16px));
  z-index: ${v("z-index", "2147483000")}; }
.banner .box { border-radius: 0; border-width: 0 0 1px; box-shadow: none; display: flex; flex-wrap: wrap;
  align-items: center; gap: 4px 16px; padding-right: 44px; background: #eff6ff;
  background: color-mix(in srgb, ${v("color-primary", "#2563eb")} 8%, ${v("color-background", "#ffffff")}); }
.banner button.close { top: 50%; transform: translateY(-50%); }
.banner h2 { margin: 0; } .banner .body { flex: 1 1 240px; } .banner .buttons { margin: 0; }
.checklist { position: fixed; right: 16px; bottom: 16px; width: min(320px, calc(100vw - 32px));
  z-index: ${v("z-index", "2147483000")}; }
.checklist.inline { position: static; width: auto; }
.items { list-style: none; padding: 0; margin: 8px 0 0; }
.items li { display: flex; align-items: center; gap: 10px; padding: 6px 0; }
.tick { flex: none; width: 20px; height: 20px; border-radius: 50%; border: 2px solid ${v("color-border", "#cbd5e1")};
  display: grid; place-items: center; font-size: 12px; color: transparent; }
li[data-done] .tick { background: #16a34a; border-color: #16a34a; color: #fff; }
li[data-done] .label { text-decoration: line-through; color: ${v("color-muted", "#6b7280")}; }
.marker { position: fixed; top: 0; left: 0; width: 22px; height: 22px; padding: 0; border-radius: 50%;
  border: 3px solid #fff; background: ${v("color-hotspot", "#2563eb")}; box-shadow: 0 0 0 0 #2563eb99;
  animation: pulse 1.6s infinite; z-index: ${v("z-index", "2147483000")}; }
@keyframes pulse { 0% { box-shadow: 0 0 0 0 #0006; } 70% { box-shadow: 0 0 0 14px #0000; } 100% { box-shadow: 0 0 0 0 #0000; } }
@media (prefers-reduced-motion: reduce) { .marker { animation: none; } }
[hidden] { display: none !important; }
:host([data-preview]) .backdrop { position: relative; inset: auto; min-height: 220px; border-radius: 8px; }
:host([data-preview]) .floating, :host([data-preview]) .checklist, :host([data-preview]) .marker {
  position: relative; left: auto; top: auto; right: auto; bottom: auto; z-index: auto; }
:host([data-preview]) .marker { display: block; margin: 0 0 10px; animation: none; }
:host([data-preview]) .checklist { width: min(320px, 100%); }
`;

let sheet = null;
function styles(shadow) {
  if (sheet === null && "adoptedStyleSheets" in Document.prototype && typeof CSSStyleSheet === "function") {
    try {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
    } catch {
      sheet = false;
    }
  }
  if (sheet) shadow.adoptedStyleSheets = [sheet];
  else {
    const style = document.createElement("style");
    style.textContent = CSS;
    shadow.append(style);
  }
}

function defineElement() {
  if (!customElements.get(TAG)) {
    /** A piece of Stepstream content: a plain host for its shadow root. */
    customElements.define(TAG, class StepstreamContent extends HTMLElement {});
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, val] of Object.entries(props)) {
    if (k === "text") node.textContent = val;
    else if (k === "class") node.className = val;
    else node.setAttribute(k, val);
  }
  node.append(...children);
  return node;
}

const FOCUSABLE = "button:not([disabled]), a[href], [tabindex]:not([tabindex='-1'])";

// -- targets ----------------------------------------------------------------

/** The first visible element matching the selector or a fallback (and containing `text`). */
function findTarget(target) {
  for (const selector of [target.selector, ...(target.fallbacks ?? [])]) {
    let found;
    try {
      found = document.querySelectorAll(selector);
    } catch {
      continue; // publish checks selectors; a browser may still disagree
    }
    for (const node of found) {
      if (target.text && !(node.textContent ?? "").includes(target.text)) continue;
      if (node.getClientRects().length === 0) continue; // display: none
      return node;
    }
  }
  return null;
}

// -- one piece of content ----------------------------------------------------

class Piece {
  /**
   * @param {Renderer} renderer
   * @param {{flow: string, flowId: string, version: number, step: string, content: any}} spec
   */
  constructor(renderer, spec) {
    this.r = renderer;
    this.spec = spec;
    this.c = spec.content;
    this.type = this.c.type;
    this.dismiss = this.c.dismiss ?? "exit";
    this.cleanups = [];
    this.shown = false;
    this.removed = false;
    this.host = el(TAG, { "data-flow": spec.flow, "data-step": spec.step, "data-type": this.type });
    this.r.theme(this.host);
    this.shadow = this.host.attachShadow({ mode: "open" });
    styles(this.shadow);
    this.build();
    if (renderer.preview) return; // drawn in place by preview(): no target, focus or events
    if (this.c.target && (this.type === "tooltip" || this.type === "hotspot")) this.waitForTarget();
    else this.show(null);
  }

  get props() {
    return { flow: this.spec.flow, version: this.spec.version, step: this.spec.step };
  }

  build() {
    const c = this.c;
    const id = `stepstream-${this.spec.flow}-${this.spec.step}`.replace(/[^\w-]/g, "_");
    const box = el("div", { class: "box", part: "box" });
    this.box = box;
    if (this.dismiss !== "none") {
      const close = el("button", {
        type: "button",
        class: "close",
        "data-dismiss": this.dismiss,
        "aria-label": this.r.closeLabel,
        text: "×",
      });
      close.addEventListener("click", () => this.onDismiss());
      box.append(close);
    }
    if (c.title) box.append(el("h2", { id: `${id}-title`, text: c.title }));
    if (c.body) {
      const body = el("div", { class: "body", id: `${id}-body` });
      body.append(markdown(c.body));
      box.append(body);
    }
    if (this.type === "checklist") {
      this.items = (c.items ?? []).map((item) =>
        el("li", { "data-item": item.step }, el("span", { class: "tick", "aria-hidden": "true", text: "✓" }),
          el("span", { class: "label", text: item.label ?? item.step })),
      );
      box.append(el("ul", { class: "items" }, ...this.items));
      this.tick();
    }
    if (c.buttons?.length) {
      const row = el("div", { class: "buttons" });
      for (const spec of c.buttons) {
        const button = el("button", { type: "button", class: spec.style ?? "primary", text: spec.label ?? "" });
        if (spec.transition) button.dataset.transition = spec.transition;
        if (spec.action) button.dataset.action = spec.action;
        button.addEventListener("click", () => this.onButton(spec, button));
        row.append(button);
      }
      box.append(row);
    }
    this.error = el("div", { class: "error", role: "alert", hidden: "" });
    box.append(this.error);
    if (c.title) box.setAttribute("aria-labelledby", `${id}-title`);
    if (c.body) box.setAttribute("aria-describedby", `${id}-body`);

    if (this.type === "modal") {
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-modal", "true");
      box.tabIndex = -1;
      const wrap = el("div", { class: "backdrop modal" }, box);
      this.shadow.append(wrap);
      this.shadow.addEventListener("keydown", (e) => this.trap(e));
    } else if (this.type === "tooltip" || this.type === "hotspot") {
      box.setAttribute("role", "dialog"); // a non-modal dialog beside its target
      box.classList.add("floating");
      if (this.type === "hotspot") {
        this.marker = el("button", {
          type: "button",
          class: "marker",
          "aria-label": c.title || this.r.hotspotLabel,
          "aria-expanded": "false",
        });
        this.marker.addEventListener("click", () => this.toggleHotspot());
        box.hidden = true;
        this.shadow.append(this.marker);
      }
      this.shadow.append(box);
      this.shadow.addEventListener("keydown", (e) => {
        if (e.key !== "Escape") return;
        if (this.type === "hotspot" && !box.hidden) this.toggleHotspot(false);
        else if (this.dismiss !== "none") this.onDismiss();
      });
    } else {
      box.setAttribute("role", this.type === "banner" ? "region" : "complementary");
      if (!c.title) box.setAttribute("aria-label", this.type);
      this.shadow.append(el("div", { class: this.type }, box));
    }
  }

  /** Tab and Shift+Tab stay inside an open modal; Escape closes it as `dismiss` says. */
  trap(e) {
    if (e.key !== "Tab" || this.r.preview) return;
    const focusable = [...this.box.querySelectorAll(FOCUSABLE)];
    if (!focusable.length) {
      e.preventDefault();
      return;
    }
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    const active = this.shadow.activeElement;
    if (e.shiftKey && (active === first || !this.box.contains(active))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (active === last || !this.box.contains(active))) {
      e.preventDefault();
      first.focus();
    }
  }

  /** Waits for the target (MutationObserver, up to wait_ms), then tracks `$target_missing`. */
  waitForTarget() {
    const target = this.c.target;
    const found = findTarget(target);
    if (found) {
      this.show(found);
      return;
    }
    const wait = Math.min(Math.max(Number(target.wait_ms ?? DEFAULT_WAIT_MS) || 0, 0), MAX_WAIT_MS);
    let timer = null;
    const observer = new MutationObserver(() => {
      const now = findTarget(target);
      if (!now) return;
      stop();
      this.show(now);
    });
    const stop = () => {
      observer.disconnect();
      clearTimeout(timer);
    };
    observer.observe(document.documentElement, {
      childList: true,
      subtree: true,
      attributes: true,
      characterData: true,
    });
    timer = setTimeout(() => {
      timer = null;
      if (this.removed || this.missingTracked) return;
      this.missingTracked = true;
      this.r.track("$target_missing", this.props);
      // it keeps watching: a target that comes later still gets its content
    }, wait);
    this.cleanups.push(stop);
  }

  show(target) {
    if (this.removed) return;
    this.r.mount(this);
    if (target) this.anchor(target);
    if (this.type === "modal") {
      this.restoreFocus = document.activeElement;
      const first = this.box.querySelector(".buttons button") ?? this.box;
      first.focus();
      // the topmost modal keeps focus (a click on the backdrop included) and hears Escape
      const topmost = () =>
        [...document.querySelectorAll(`${TAG}[data-type=modal]`)].pop() === this.host;
      const onFocus = (e) => {
        if (e.target !== this.host && topmost()) first.focus();
      };
      const onKey = (e) => {
        if (e.key !== "Escape" || !topmost()) return;
        e.preventDefault();
        if (this.dismiss !== "none") this.onDismiss();
      };
      document.addEventListener("focusin", onFocus);
      document.addEventListener("keydown", onKey);
      this.cleanups.push(() => {
        document.removeEventListener("focusin", onFocus);
        document.removeEventListener("keydown", onKey);
      });
      this.shadow.querySelector(".backdrop").addEventListener("mousedown", (e) => {
        if (e.target === e.currentTarget) e.preventDefault(); // focus stays in the dialog
      });
    }
    if (!this.shown) {
      this.shown = true;
      this.r.track("$shown", this.props);
    }
  }

  /** Places the tooltip (or the hotspot's marker) beside its target and follows it. */
  anchor(target) {
    const wanted = this.c.target.placement ?? (this.type === "hotspot" ? "right" : "bottom");
    const placement = wanted === "auto" ? "bottom" : wanted;
    const place = (reference, floating, gap, side) =>
      computePosition(reference, floating, {
        strategy: "fixed",
        placement: side,
        // the other side first, then the other axis; shifted into view as a last resort
        middleware: [offset(gap), flip({ padding: 8, crossAxis: false, fallbackPlacements: FALLBACKS[side] }),
          shift({ padding: 8, crossAxis: true })],
      }).then(({ x, y, placement: where }) => {
        Object.assign(floating.style, { left: `${x}px`, top: `${y}px` });
        floating.dataset.placement = where;
      });
    const floating = this.marker ?? this.box;
    const update = () => {
      if (!target.isConnected) {
        this.lost();
        return;
      }
      place(target, floating, this.marker ? 6 : 10, placement).then(() => {
        if (this.marker && !this.box.hidden) return place(this.marker, this.box, 10, "bottom");
      });
    };
    const stop = autoUpdate(target, floating, update, { animationFrame: false });
    this.cleanups.push(stop);
    if (this.marker) this.cleanups.push(autoUpdate(this.marker, this.box, update));
    this.positioned = update;
  }

  /** The target left the page: hide and wait for it again. */
  lost() {
    this.runCleanups();
    this.host.remove();
    this.waitForTarget();
  }

  toggleHotspot(open = this.box.hidden) {
    this.box.hidden = !open;
    this.marker.setAttribute("aria-expanded", String(open));
    if (open) {
      this.positioned?.();
      (this.box.querySelector(".buttons button") ?? this.box.querySelector("button.close"))?.focus();
    } else this.marker.focus();
  }

  /** Ticks each checklist item whose step is completed. */
  tick() {
    if (!this.items) return;
    const flow = this.r.client.flows.get(this.spec.flow);
    for (const li of this.items) {
      const done = flow?.steps.find((s) => s.identifier === li.dataset.item)?.state === "completed";
      li.toggleAttribute("data-done", done);
      li.querySelector(".tick").setAttribute("aria-label", done ? this.r.doneLabel : "");
    }
  }

  async onButton(spec, button) {
    if (this.r.preview) return; // a preview's buttons do nothing
    const buttons = [...this.box.querySelectorAll(".buttons button")];
    for (const b of buttons) b.disabled = true;
    this.error.hidden = true;
    try {
      if (spec.action === "complete") await this.r.client.completeStep(this.spec.flow, this.spec.step);
      else await this.r.client.transition(this.spec.flow, spec.transition);
    } catch (e) {
      this.error.textContent = e.message;
      this.error.hidden = false;
      for (const b of buttons) b.disabled = false;
      button.focus();
    }
  }

  /**
   * The close control or Escape. A final step is completed; otherwise `dismiss` says:
   * exit the flow, or hide this content until the page reloads.
   */
  async onDismiss() {
    if (this.dismiss === "none" || this.r.preview) return;
    this.r.track("$dismissed", this.props);
    const { flow, step } = this.spec;
    if (this.dismiss === "hide") {
      this.r.hide(this);
      this.r.client.completeStep(flow, step).catch(() => {}); // 409 unless a final step
      return;
    }
    this.host.hidden = true;
    try {
      await this.r.client.completeStep(flow, step);
    } catch (e) {
      if (e.status !== 409 && e.status !== 400 && e.status !== 404) {
        this.host.hidden = false;
        this.error.textContent = e.message;
        this.error.hidden = false;
        return;
      }
      try {
        await this.r.client.exitFlow(flow);
      } catch (e2) {
        this.host.hidden = false;
        this.error.textContent = e2.message;
        this.error.hidden = false;
      }
    }
  }

  runCleanups() {
    for (const fn of this.cleanups.splice(0)) fn();
  }

  remove() {
    if (this.removed) return;
    this.removed = true;
    this.runCleanups();
    const active = document.activeElement;
    const hadFocus = active === this.host || active === document.body || active === null;
    this.host.remove();
    // a modal gives focus back to where it was (unless the person moved it elsewhere)
    if (this.type === "modal" && hadFocus && this.restoreFocus?.isConnected) this.restoreFocus.focus();
  }
}

// -- the renderer -----------------------------------------------------------

/**
 * Shows the content of every active step of the person's active flows, live.
 * Made by `client.render(options)`; `stop()` removes everything it shows.
 */
export class Renderer {
  /**
   * @param {import("./stepstream.js").StepstreamClient} client
   * @param {{flows?: string[], locale?: string, root?: Element, labels?: object}} [options]
   */
  constructor(client, options = {}) {
    defineElement();
    this.client = client;
    this.flows = options.flows ? new Set(options.flows) : null;
    this.locale = options.locale;
    this.root = options.root ?? document.body;
    this.inRoot = Boolean(options.root);
    const labels = options.labels ?? {};
    this.closeLabel = labels.close ?? "Close";
    this.hotspotLabel = labels.hotspot ?? "Show tip";
    this.doneLabel = labels.done ?? "done";
    /** @type {Map<string, Piece>} "flowInstanceId/step" -> what is shown */
    this.pieces = new Map();
    /** dismissed with `hide`: not shown again until the page reloads */
    this.hidden = new Set();
    this.tokens = {};
    this.stopped = false;
    this._syncing = false;
    this._again = false;
    this._off = client.subscribe(() => this.sync());
    this._offStatus = client.onStatus((status) => status === "live" && this.sync());
    this.ready = client.ready.then(() => this.sync());
    this.ready.catch(() => {});
  }

  /**
   * Takes the environment's theme from the get_content answers the client keeps (they
   * carry it), so showing content costs no get_theme round trip; without one (a server
   * without themes) the style sheet's built-in defaults apply.
   */
  useTheme() {
    const tokens = this.client._contentTheme?.tokens;
    if (!tokens || tokens === this.tokens) return;
    this.tokens = tokens;
    for (const piece of this.pieces.values()) this.theme(piece.host);
  }

  theme(host) {
    for (const [name, value] of Object.entries(this.tokens)) {
      if (/^[a-z0-9-]+$/.test(name)) host.style.setProperty(`--stepstream-${name}`, String(value));
    }
  }

  track(event, properties) {
    this.client.track(event, properties).catch((e) => console.warn("stepstream:", event, e.message));
  }

  /** What should show now: [key, spec-without-content] for each active step of an active flow. */
  wanted() {
    const out = [];
    for (const flow of this.client.flows.values()) {
      if (flow.state !== "active" || (this.flows && !this.flows.has(flow.flow))) continue;
      for (const step of flow.steps) {
        if (step.state !== "active") continue;
        const key = `${flow.id}/${step.identifier}`;
        if (!this.hidden.has(key)) out.push([key, { flow: flow.flow, flowId: flow.id, version: flow.version, step: step.identifier }]);
      }
    }
    return out;
  }

  /** Brings the shown pieces in line with the live state; one pass at a time. */
  async sync() {
    if (this.stopped) return;
    if (this._syncing) {
      this._again = true;
      return;
    }
    this._syncing = true;
    try {
      do {
        this._again = false;
        const wanted = new Map(this.wanted());
        for (const [key, piece] of this.pieces) {
          if (!wanted.has(key)) {
            piece.remove();
            this.pieces.delete(key);
          }
        }
        for (const piece of this.pieces.values()) piece.tick();
        for (const [key, spec] of wanted) {
          if (this.pieces.has(key)) continue;
          let steps;
          try {
            steps = await this.client.content(spec.flow, spec.version, this.locale);
          } catch (e) {
            console.warn("stepstream: no content for", spec.flow, spec.version, e.message);
            continue;
          }
          if (this.stopped) return;
          this.useTheme();
          const content = steps.get(spec.step);
          if (!content || this.pieces.has(key)) continue;
          // the step may have moved on while its content loaded
          const now = this.client.flows.get(spec.flow);
          if (now?.id !== spec.flowId || now.state !== "active") continue;
          if (now.steps.find((s) => s.identifier === spec.step)?.state !== "active") continue;
          this.pieces.set(key, new Piece(this, { ...spec, content }));
        }
      } while (this._again && !this.stopped);
    } finally {
      this._syncing = false;
    }
  }

  mount(piece) {
    if (piece.host.isConnected) return;
    if (piece.type === "banner") this.root.prepend(piece.host);
    else this.root.append(piece.host);
    if (this.inRoot) piece.shadow.querySelector(".checklist")?.classList.add("inline"); // in the app's own layout
  }

  hide(piece) {
    for (const [key, p] of this.pieces) {
      if (p !== piece) continue;
      this.hidden.add(key);
      this.pieces.delete(key);
    }
    piece.remove();
  }

  /** Removes everything shown and stops following the state. */
  stop() {
    this.stopped = true;
    this._off();
    this._offStatus();
    for (const piece of this.pieces.values()) piece.remove();
    this.pieces.clear();
  }
}

/** @param {any} client @param {object} [options] */
export function startRenderer(client, options) {
  return new Renderer(client, options);
}

/**
 * Draws one piece of content into `container`, without a server: the builder's live
 * preview. The piece is built as `render()` builds it (same styles, Markdown, theme
 * tokens), laid out in place (no backdrop over the page, no target to find), inert:
 * its buttons do nothing and it takes no focus. Answers the `<stepstream-content>` host.
 * @param {Element} container
 * @param {object} content a step's `content`, as published
 * @param {{theme?: object, locale?: string, step?: string, labels?: object}} [options]
 */
export function preview(container, content, options = {}) {
  defineElement();
  const labels = options.labels ?? {};
  const tokens = options.theme ?? {};
  let shown = { ...content };
  const texts = options.locale ? content.locales?.[options.locale] : null;
  delete shown.locales;
  if (texts) {
    for (const key of ["title", "body"]) if (key in texts) shown[key] = texts[key];
    for (const key of ["buttons", "items"]) {
      if (Array.isArray(texts[key]) && Array.isArray(shown[key])) {
        shown[key] = shown[key].map((entry, i) => ({ ...entry, label: texts[key][i]?.label ?? entry.label }));
      }
    }
  }
  const stub = {
    preview: true,
    closeLabel: labels.close ?? "Close",
    hotspotLabel: labels.hotspot ?? "Show tip",
    doneLabel: labels.done ?? "done",
    client: { flows: new Map() },
    track() {},
    theme(host) {
      for (const [name, value] of Object.entries(tokens)) {
        if (/^[a-z0-9-]+$/.test(name)) host.style.setProperty(`--stepstream-${name}`, String(value));
      }
    },
  };
  const piece = new Piece(stub, { flow: "preview", flowId: "", version: 0, step: options.step ?? "step", content: shown });
  piece.host.setAttribute("data-preview", "");
  piece.host.inert = true;
  if (piece.marker) piece.box.hidden = false; // a hotspot: its marker and its tip, both
  container.replaceChildren(piece.host);
  return piece.host;
}
