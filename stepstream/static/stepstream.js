// Stepstream browser SDK: a live copy of one person's flows and steps.
// A dependency-free ES module; no build step. Protocol: docs/protocol.md;
// quickstart: docs/clients.md.
//
//   import stepstream from "/static/stepstream.js";  // or: import { connect } from ...
//   const client = stepstream.connect({ url: "http://localhost:8000", key: "pk_...", personKey: "u-1" });
//   client.flow("onboarding").onChange((flow) => render(flow));
//   client.flow("onboarding").step("welcome").state;   // "active", or undefined before the snapshot
//   await client.transition("onboarding", "next");
//   await client.render();   // shows the steps' content (modals, tooltips, ...): stepstream-render.js
//
// How it stays exact: the first snapshot (`identify`) carries the person's `seq`;
// both subscriptions (`flow` and `step`) start from it with `since_seq`, so
// nothing is missed between the two. Each entity keeps its own resume point
// (the two streams are separate and interleave), and every flow and step
// remembers the `seq` of the last change applied to it, so a late or repeated
// event never moves a state backwards. After a disconnect the client
// reconnects with exponential backoff and full jitter (`backoffDelay`) and
// resubscribes from its resume points, sending the `epoch` of the log they
// belong to: when the person's log restarted (deleted and created again) the
// server answers 409 and the client reloads the state instead. A subscription the server ends
// because its person token lapsed (`subscription_ended`) is renewed with a
// fresh token from `personToken` (a function); a refused key (close 4401) or
// a revoked one (4403) stops the client with `error` set, without retrying.

/**
 * @typedef {"inactive"|"active"|"completed"} StepStateName
 * @typedef {"active"|"inactive"|"completed"|"exited"} FlowStateName
 * @typedef {{id: string, identifier: string, name: string, state: StepStateName}} StepState
 * @typedef {{id: string, flow: string, version: number, state: FlowStateName,
 *   steps: StepState[], seq: number}} FlowState
 *   A flow instance; `seq` is the latest change it reflects. Each change
 *   replaces the object (and its `steps` array), so `===` tells whether it changed.
 * @typedef {{entity: "flow"|"step", id: string, identifier: string, state: string,
 *   previous_state: string, seq: number, person_key: string, flow: string, flow_id: string,
 *   occurred_at: string, epoch: string,
 *   cause: {kind: "call"|"automatic"|"start_when", via?: string,
 *   action?: string, transition?: string, event?: string, data?: boolean}}} StateChange
 * @typedef {"connecting"|"live"|"reconnecting"|"closed"} Status
 * @typedef {string | (() => string | Promise<string>)} TokenSource
 *   A person token (JWT), or a function fetching a fresh one; a function is
 *   called on every (re)connect, after a 401, and when the server ends a
 *   subscription because its token lapsed (`subscription_ended`).
 * @typedef {object} ConnectOptions
 * @property {string} key the environment's publishable key (pk_...)
 * @property {string} personKey the person, as your product names them
 * @property {string} [url] the server's base URL (http(s)://host:port); default: this page's origin
 * @property {TokenSource} [personToken] identity verification: sent as `data.person_token`
 * @property {object} [data] person data merged on `identify` when the client first connects
 * @property {number} [replayFrom] also replay the person's recorded changes after this seq
 *   through `onEvent` (e.g. 0: the whole log); default: only changes after the snapshot
 * @property {number} [minBackoffMs] reconnect attempt n waits a random time in
 *   [0, min(maxBackoffMs, minBackoffMs * 2^n)] (full jitter); default 250
 * @property {number} [maxBackoffMs] the cap of that window (default 10000)
 * @property {number} [heartbeatMs] ping the server this often while idle; drop the socket
 *   if it does not answer in as long (default 20000; 0: off)
 * @property {number} [requestTimeoutMs] how long a request (or waiting to be live) may take
 *   (default 15000)
 * @property {typeof WebSocket} [WebSocket] a WebSocket implementation (default: the global one)
 */

/** Close codes after which reconnecting cannot help: code -> [error code, status, what]. */
// onChange hears a burst of messages once: when none has come for this long,
// or this long after the burst's first change (a steady stream still shows)
const BURST_QUIET_MS = 10;
const BURST_MAX_MS = 100;

// get_content answers kept per client: (flow, version, locale) triples; versions never change
const CONTENT_CACHE = 64;

const FATAL_CLOSE_CODES = new Map([
  [4401, ["invalid_key", 401, "invalid key"]],
  [4403, ["revoked", 403, "the key was revoked or this origin is refused"]],
]);

/** An error answered by the server (`status`, `errors`, `code`), or a connection problem. */
export class StepstreamError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, errors?: string[]}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    this.name = "StepstreamError";
    /** @type {number} HTTP-like status; 0 for a connection problem */
    this.status = details.status ?? 0;
    /** @type {string} machine-readable: not_found, conflict, unauthenticated, disconnected,
     * invalid_key (close 4401), revoked (close 4403), ... */
    this.code = details.code ?? "";
    /** @type {string[]} */
    this.errors = details.errors ?? [message];
  }
}

/** Turns an http(s) (or ws(s)) base URL into the WebSocket endpoint. */
/**
 * Milliseconds to wait before reconnect attempt `attempt` (0 first): exponential backoff with
 * full jitter, random(0, min(capMs, baseMs * 2^attempt)). After a server restart thousands of
 * clients spread evenly over the whole window instead of arriving together; the Python
 * client computes the same (`backoff_delay`).
 * @param {number} attempt @param {number} baseMs @param {number} capMs
 * @param {() => number} [random] a source in [0, 1) (default Math.random)
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 62)) * random();
}

function socketUrl(base, key) {
  const url = new URL("/ws", base);
  url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
  url.searchParams.set("key", key);
  return url.toString();
}

/** A live view of one step of one flow; never undefined, even before the snapshot. */
class StepHandle {
  /** @param {FlowHandle} flow @param {string} identifier */
  constructor(flow, identifier) {
    this.flow = flow;
    this.identifier = identifier;
  }

  /** @returns {StepState|undefined} */
  get value() {
    return this.flow.value?.steps.find((s) => s.identifier === this.identifier);
  }

  /** @returns {StepStateName|undefined} */
  get state() {
    return this.value?.state;
  }

  get isActive() {
    return this.state === "active";
  }

  get isCompleted() {
    return this.state === "completed";
  }

  /**
   * Calls fn(step) now (when known) and whenever this step's state changes (once per change set).
   * @param {(step: StepState) => void} fn
   * @returns {() => void} unsubscribe
   */
  onChange(fn) {
    let last = this.value;
    if (last) fn(last);
    return this.flow.client._listen((flowId) => {
      if (flowId !== this.flow.identifier) return;
      const now = this.value;
      if (now && now !== last) fn(now);
      last = now;
    });
  }
}

/** A live view of one flow of the person; never undefined, even before the snapshot. */
class FlowHandle {
  /** @param {StepstreamClient} client @param {string} identifier */
  constructor(client, identifier) {
    this.client = client;
    this.identifier = identifier;
    /** @type {Map<string, StepHandle>} */
    this.stepHandles = new Map();
  }

  /** The current flow instance, or undefined if the person has none (yet). @returns {FlowState|undefined} */
  get value() {
    return this.client.flows.get(this.identifier);
  }

  /** @returns {FlowStateName|undefined} */
  get state() {
    return this.value?.state;
  }

  /** @returns {StepState[]} */
  get steps() {
    return this.value?.steps ?? [];
  }

  /** @returns {StepState[]} the steps active now (several when the flow branches) */
  get activeSteps() {
    return this.steps.filter((s) => s.state === "active");
  }

  /** @param {string} identifier @returns {StepHandle} */
  step(identifier) {
    let handle = this.stepHandles.get(identifier);
    if (!handle) this.stepHandles.set(identifier, (handle = new StepHandle(this, identifier)));
    return handle;
  }

  /**
   * Calls fn(flow) now (when known) and once per committed change set of this flow
   * or its steps: events arriving together are applied first (see _notify).
   * @param {(flow: FlowState) => void} fn
   * @returns {() => void} unsubscribe
   */
  onChange(fn) {
    if (this.value) fn(this.value);
    return this.client._listen((flowId) => {
      if (flowId === this.identifier && this.value) fn(this.value);
    });
  }

  /** @param {string} transition @returns {Promise<FlowState>} */
  transition(transition) {
    return this.client.transition(this.identifier, transition);
  }
}

export class StepstreamClient {
  /** @param {ConnectOptions} options */
  constructor(options) {
    if (!options || !options.key) throw new TypeError("stepstream: `key` is required");
    if (!options.personKey) throw new TypeError("stepstream: `personKey` is required");
    this.options = {
      minBackoffMs: 250,
      maxBackoffMs: 10000,
      heartbeatMs: 20000,
      requestTimeoutMs: 15000,
      ...options,
    };
    this.url = options.url || globalThis.location?.origin;
    this.personKey = options.personKey;
    /** @type {Map<string, FlowState>} the person's flow instances by flow identifier */
    this.flows = new Map();
    /** Resume points: the last `seq` received on each subscription. */
    this.seq = { flow: 0, step: 0 };
    /** @type {string|null} the life of the person's log the resume points belong to */
    this.epoch = null;
    /** @type {Status} */
    this.status = "connecting";
    /** @type {StepstreamError|null} why the client closed, when it closed by itself */
    this.error = null;
    /** @type {Record<string, any>|null} the person's data, as the last identify answered */
    this.personData = null;

    this._itemSeq = new Map(); // flow instance or step instance id -> seq of its last applied change
    this._unplaced = []; // events of flow instances the snapshot did not have yet
    this._refreshing = null;
    this._flowHandles = new Map();
    this._changeListeners = new Set();
    this._eventListeners = new Set();
    /** flows changed since listeners last heard: they hear once per burst (see _notify) */
    this._dirty = new Set();
    this._flushTimer = null;
    this._flushSince = 0;
    this._statusListeners = new Set();
    this._pending = new Map();
    this._nextId = 1;
    this._attempt = 0;
    this._closed = false;
    this._snapshotted = false;
    this._token = typeof options.personToken === "string" ? options.personToken : undefined;
    this._ws = null;
    this._timers = new Set();
    /** @type {Map<string, Promise<Map<string, object>>>} get_content answers (see content()) */
    this._content = new Map();
    /** @type {{tokens: object} | null} the theme the latest get_content answer carried */
    this._contentTheme = null;
    /** Resolves when the client is first live; rejects if it closes before. */
    this.ready = this.whenLive(Infinity);
    this.ready.catch(() => {});
    this._onOnline = () => this._attempt > 0 && this._reconnectNow();
    globalThis.addEventListener?.("online", this._onOnline);
    this._unwatchPages = this._watchPages();
    this._open();
  }

  // -- reading state -----------------------------------------------------

  /** @param {string} identifier @returns {FlowHandle} */
  flow(identifier) {
    let handle = this._flowHandles.get(identifier);
    if (!handle) this._flowHandles.set(identifier, (handle = new FlowHandle(this, identifier)));
    return handle;
  }

  /**
   * Calls fn(change) for every state_change received, once each, per entity in `seq` order.
   * @param {(change: StateChange) => void} fn
   * @returns {() => void} unsubscribe
   */
  onEvent(fn) {
    this._eventListeners.add(fn);
    return () => this._eventListeners.delete(fn);
  }

  /**
   * Calls fn(status, error) now and whenever the connection status changes.
   * @param {(status: Status, error: StepstreamError|null) => void} fn
   * @returns {() => void} unsubscribe
   */
  onStatus(fn) {
    this._statusListeners.add(fn);
    fn(this.status, this.error);
    return () => this._statusListeners.delete(fn);
  }

  /**
   * Calls fn(flowIdentifier) once per change set of any flow of the person (React:
   * `useSyncExternalStore(client.subscribe, () => client.flow(id).value)`).
   * @param {(flow: string) => void} fn
   * @returns {() => void} unsubscribe
   */
  subscribe = (fn) => this._listen(fn);

  /**
   * Resolves when the client is live (connected, subscribed, up to date).
   * @param {number} [timeoutMs] default: the request timeout
   * @returns {Promise<void>}
   */
  whenLive(timeoutMs = this.options?.requestTimeoutMs ?? 15000) {
    if (this.status === "live") return Promise.resolve();
    if (this.status === "closed") return Promise.reject(this._closedError());
    return new Promise((resolve, reject) => {
      let timer;
      const off = this._onStatusInternal((status) => {
        if (status === "live") done(resolve);
        else if (status === "closed") done(() => reject(this._closedError()));
      });
      const done = (fn) => {
        off();
        clearTimeout(timer);
        this._timers.delete(timer);
        fn();
      };
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(
          () => done(() => reject(new StepstreamError("not connected", { code: "disconnected" }))),
          timeoutMs,
        );
        this._timers.add(timer);
      }
    });
  }

  // -- acting ------------------------------------------------------------

  /**
   * Calls a transition of one of the person's flows. Waits (up to the request
   * timeout) for the connection to be live. Resolves with the flow instance
   * after the call, already applied to the live state; rejects with a
   * StepstreamError (`status` 409: no active step has it, or the flow is not
   * active; 404: no such flow instance).
   * @param {string} flow
   * @param {string} transition
   * @returns {Promise<FlowState>}
   */
  async transition(flow, transition) {
    await this.whenLive();
    const instance = await this._request("transition", { flow, transition });
    this._applyInstance(instance, instance.seq);
    return this.flows.get(instance.flow) ?? instance;
  }

  /**
   * Records that the person did `event` (e.g. "invited_teammate"). Rules it sets off
   * (flows starting, automatic transitions) run on the server and arrive as events
   * whose `cause` names the event (docs/rules.md).
   * @param {string} event
   * @param {object} [properties]
   * @returns {Promise<{person_key: string, event: string, count: number, seq: number}>}
   */
  async track(event, properties) {
    await this.whenLive();
    return this._request("track", properties === undefined ? { event } : { event, properties });
  }

  /**
   * Replaces the person's instance of `flow` with a new one of its latest version
   * (the old one exits first unless it had finished). Rejects with 404 when there is none.
   * @param {string} flow
   * @returns {Promise<FlowState>}
   */
  async restart(flow) {
    await this.whenLive();
    const instance = await this._request("restart", { flow });
    this._applyInstance(instance, instance.seq);
    return this.flows.get(instance.flow) ?? instance;
  }

  /**
   * Merges `data` into the person's data (top-level keys; the environment's schema applies).
   * @param {object} data
   * @returns {Promise<object>} the person's data after the merge
   */
  async identify(data) {
    await this.whenLive();
    const state = await this._request("identify", { data });
    this._applySnapshot(state, false);
    this.personData = state.data;
    return state.data;
  }

  /** Reads a fresh snapshot (get_state) and merges it; rarely needed. */
  async refresh() {
    await this.whenLive();
    const state = await this._request("get_state", {});
    this._applySnapshot(state, false);
  }

  /**
   * Completes an active final step that carries content (`complete_step`); rejects with 409
   * when `step` is not an active final step of the person's instance of `flow`.
   * @param {string} flow @param {string} step @returns {Promise<FlowState>}
   */
  async completeStep(flow, step) {
    await this.whenLive();
    const instance = await this._request("complete_step", { flow, step });
    this._applyInstance(instance, instance.seq);
    return this.flows.get(instance.flow) ?? instance;
  }

  /** Exits the person's instance of `flow` (as the close control of its content does). */
  exitFlow(flow) {
    return this._flowAction("exit", flow);
  }

  /** Pauses the person's instance of `flow`. @param {string} flow */
  pause(flow) {
    return this._flowAction("pause", flow);
  }

  /** Resumes a paused instance of `flow`. @param {string} flow */
  resume(flow) {
    return this._flowAction("resume", flow);
  }

  async _flowAction(action, flow) {
    await this.whenLive();
    const instance = await this._request(action, { flow });
    if (instance?.steps) this._applyInstance(instance, instance.seq);
    return this.flows.get(flow) ?? instance;
  }

  /**
   * The content of a flow version's steps in `locale` (`get_content`), as a Map of step
   * identifier to content. A version never changes, so each (flow, version, locale) is
   * asked once per client and kept (at most CONTENT_CACHE entries, the oldest dropped).
   * @param {string} flow @param {number} version @param {string} [locale]
   * @returns {Promise<Map<string, object>>}
   */
  content(flow, version, locale) {
    const key = JSON.stringify([flow, version, locale ?? null]);
    let entry = this._content.get(key);
    if (!entry) {
      const data = locale ? { flow, version, locale } : { flow, version };
      entry = this.whenLive()
        .then(() => this._request("get_content", data))
        .then((answer) => {
          if (answer.theme) this._contentTheme = answer.theme; // the renderer needs no get_theme
          return new Map(answer.steps.filter((s) => s.content).map((s) => [s.identifier, s.content]));
        });
      entry.catch(() => this._content.delete(key)); // asked again next time
      this._content.set(key, entry);
      if (this._content.size > CONTENT_CACHE) this._content.delete(this._content.keys().next().value);
    }
    return entry;
  }

  /** The environment's theme (`get_theme`): `{tokens: {name: value}}`. */
  async theme() {
    await this.whenLive();
    return this._request("get_theme", {});
  }

  /**
   * Shows the content of every active step of the person's active flows, following them
   * live (docs/clients.md, "Rendering content"). Loads the renderer (and Floating UI) on
   * first use only. Resolves with the renderer; `renderer.stop()` removes what it shows.
   * @param {{flows?: string[], locale?: string, root?: Element,
   *   labels?: {close?: string, hotspot?: string, done?: string}}} [options]
   */
  async render(options) {
    const { startRenderer } = await import(new URL("./stepstream-render.js", import.meta.url).href);
    return startRenderer(this, options);
  }

  /** Sets the person token sent from now on (e.g. after refreshing it). @param {string} token */
  setPersonToken(token) {
    this._token = token;
  }

  /** Closes the connection for good. */
  close() {
    if (this._closed) return;
    this._closed = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    this._unwatchPages();
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    const ws = this._ws;
    this._ws = null;
    this._failPending(new StepstreamError("client closed", { code: "closed" }));
    try {
      ws?.close(1000);
    } catch {
      /* already closed */
    }
    this._setStatus("closed");
  }

  // -- pages: where the person is (the `page` action, docs/protocol.md) ---------

  /** Sends the page on connect (`always`) and when it changed; `pages: false` turns it off. */
  _sendPage(always = false) {
    const location = globalThis.location;
    if (this.options.pages === false || !location?.href || this.status !== "live") return;
    let url = location.href;
    if (url.length > 2048) url = (location.origin + location.pathname).slice(0, 2048);
    if (url === this._page && !always) return;
    this._page = url;
    this._request("page", { url }).catch(() => {});
  }

  /** Hears every navigation: the History API (wrapped once per page), popstate, hashchange. */
  _watchPages() {
    const history = globalThis.history;
    if (this.options.pages === false || !history || !globalThis.addEventListener) return () => {};
    if (!history.__stepstreamPages) {
      for (const name of ["pushState", "replaceState"]) {
        const original = history[name];
        history[name] = function (...args) {
          const result = original.apply(this, args);
          globalThis.dispatchEvent(new Event("stepstream:navigate"));
          return result;
        };
      }
      history.__stepstreamPages = true;
    }
    const send = () => this._sendPage();
    const names = ["stepstream:navigate", "popstate", "hashchange"];
    for (const name of names) globalThis.addEventListener(name, send);
    return () => names.forEach((name) => globalThis.removeEventListener(name, send));
  }

  // -- connection --------------------------------------------------------

  _open() {
    if (this._closed) return;
    const Impl = this.options.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      ws = new Impl(socketUrl(this.url, this.options.key));
    } catch (e) {
      this._fatal(new StepstreamError(`cannot open the WebSocket: ${e.message}`));
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._start(ws).catch((e) => this._startFailed(ws, e));
    };
    ws.onmessage = (message) => {
      if (ws !== this._ws) return;
      this._lastHeard = Date.now();
      let parsed;
      try {
        parsed = JSON.parse(message.data);
      } catch {
        return;
      }
      this._receive(parsed);
      if (this._flushTimer !== null) this._deferFlush(); // the burst goes on: wait for its end
    };
    ws.onclose = (event) => {
      if (ws === this._ws) this._disconnected(event.code, event.reason);
    };
    ws.onerror = () => {}; // onclose follows and handles it
  }

  /** Snapshot (first time, or when the log restarted), then both subscriptions. */
  async _start(ws) {
    await this._loadToken();
    if (!this._snapshotted) await this._snapshot();
    try {
      await this._subscribeBoth();
    } catch (error) {
      if (error.status !== 409) throw error;
      // the person's log restarted (deleted and created again): reload the state
      // and follow the new log instead of resuming in the old one
      await this._snapshot();
      await this._subscribeBoth();
    }
    if (ws !== this._ws) return;
    this._attempt = 0;
    this._setStatus("live");
    this._sendPage(true);
    this._heartbeat(ws);
    if (this._unplaced.length) this._refreshSoon(); // a refresh lost with the previous socket
  }

  /** The person's state now; the resume points move to it. */
  async _snapshot() {
    const state = await this._request("identify", { data: this.options.data ?? {} });
    this.personData = state.data;
    const restarted = this.epoch !== null && state.epoch !== this.epoch;
    this._applySnapshot(state, true);
    this.epoch = state.epoch ?? null;
    const from = restarted ? undefined : this.options.replayFrom;
    const resume = Number.isInteger(from) && from >= 0 && from < state.seq ? from : state.seq;
    this.seq = { flow: resume, step: resume };
    this._snapshotted = true;
  }

  async _subscribeBoth() {
    const results = await Promise.allSettled(["flow", "step"].map((e) => this._subscribeOne(e)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      const error = failed.reason;
      if (error.status === 404) this._snapshotted = false; // deleted: start over
      throw error;
    }
  }

  _subscribeOne(entity) {
    const data = { entity, since_seq: this.seq[entity] };
    if (this.epoch !== null) data.epoch = this.epoch;
    return this._request("subscribe_state_change", data);
  }

  /**
   * The server ended a subscription: the person was deleted (404), so start over from a
   * fresh snapshot; or its person token lapsed (401), so renew it with a fresh token.
   */
  async _subscriptionEnded(data) {
    if (data?.status === 404) {
      this._snapshotted = false;
      if (this._ws) this._drop(this._ws);
      return;
    }
    const errors = data?.errors?.length ? data.errors : ["the subscription ended"];
    const error = new StepstreamError(errors.join(" "), {
      status: data?.status ?? 401,
      code: "unauthenticated",
      errors,
    });
    if (typeof this.options.personToken !== "function") {
      this._fatal(error); // a fixed token cannot be renewed: say why and stop
      return;
    }
    const ws = this._ws;
    try {
      this._token = undefined;
      await this._loadToken();
      await this._subscribeOne(data.entity);
    } catch (e) {
      console.warn("stepstream: could not renew the subscription:", e.message);
      if (e.status === 409) this._snapshotted = false;
      if (ws && ws === this._ws) this._drop(ws);
    }
  }

  _startFailed(ws, error) {
    if (ws !== this._ws || this._closed) return;
    const identityRefused = error.status === 401 || error.status === 403;
    // 400: e.g. `data` breaks the environment's schema; retrying would not change that
    if (error.status === 400 || (identityRefused && typeof this.options.personToken !== "function")) {
      this._fatal(error);
      return;
    }
    if (identityRefused) this._token = undefined; // fetch a fresh one
    if (error.code !== "disconnected") console.warn("stepstream:", error.message);
    this._drop(ws);
  }

  async _loadToken() {
    const source = this.options.personToken;
    if (typeof source === "function" && this._token === undefined) this._token = await source();
  }

  /** Sends a ping when the socket has been quiet; drops it if the server does not answer. */
  _heartbeat(ws) {
    const every = this.options.heartbeatMs;
    if (!every) return;
    this._lastHeard = Date.now();
    const tick = async () => {
      this._timers.delete(timer);
      if (ws !== this._ws || this._closed) return;
      if (Date.now() - this._lastHeard >= every) {
        try {
          await this._request("ping", undefined, every);
        } catch {
          if (ws === this._ws) this._drop(ws);
          return;
        }
      }
      if (ws === this._ws) timer = this._later(tick, every / 2);
    };
    let timer = this._later(tick, every / 2);
  }

  _later(fn, ms) {
    const timer = setTimeout(fn, ms);
    this._timers.add(timer);
    return timer;
  }

  /** Abandons a socket (it may be dead without knowing it) and reconnects. */
  _drop(ws) {
    try {
      ws.close(4000, "reconnecting");
    } catch {
      /* already closed */
    }
    this._disconnected(1006);
  }

  _reconnectNow() {
    if (this._closed || this._ws || this._reconnectTimer === undefined) return;
    clearTimeout(this._reconnectTimer);
    this._timers.delete(this._reconnectTimer);
    this._reconnectTimer = undefined;
    this._open();
  }

  _disconnected(code, reason = "") {
    this._ws = null;
    this._failPending(new StepstreamError("connection closed", { code: "disconnected" }));
    if (this._closed) return;
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal) {
      const [kind, status, what] = fatal;
      const message = `${what} (close code ${code})${reason ? `: ${reason}` : ""}`;
      this._fatal(
        new StepstreamError(message, { code: kind, status, errors: reason ? [reason] : undefined }),
      );
      return;
    }
    this._setStatus(this._snapshotted ? "reconnecting" : "connecting");
    const { minBackoffMs, maxBackoffMs } = this.options;
    const delay = backoffDelay(this._attempt, minBackoffMs, maxBackoffMs);
    this._attempt += 1;
    this._reconnectTimer = this._later(() => {
      this._reconnectTimer = undefined;
      this._open();
    }, delay);
  }

  _fatal(error) {
    this.error = error;
    console.error("stepstream:", error.message);
    this.close();
  }

  _closedError() {
    return this.error ?? new StepstreamError("client closed", { code: "closed" });
  }

  _failPending(error) {
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      this._timers.delete(timer);
      reject(error);
    }
    this._pending.clear();
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    for (const fn of [...this._statusListeners]) fn(status, this.error);
  }

  _onStatusInternal(fn) {
    this._statusListeners.add(fn);
    return () => this._statusListeners.delete(fn);
  }

  _listen(fn) {
    this._changeListeners.add(fn);
    return () => this._changeListeners.delete(fn);
  }

  // -- requests and events -----------------------------------------------

  /** Sends one action about this person; resolves with the response's `data`. */
  _request(action, data, timeoutMs = this.options.requestTimeoutMs) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(new StepstreamError("not connected", { code: "disconnected" }));
    }
    const id = this._nextId++;
    const body = data === undefined ? {} : { person_key: this.personKey, ...data };
    if (data !== undefined && this._token) body.person_token = this._token;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._timers.delete(timer);
        if (this._pending.delete(id)) {
          reject(new StepstreamError(`${action}: no answer`, { code: "timeout" }));
        }
      }, timeoutMs);
      this._timers.add(timer);
      this._pending.set(id, { resolve, reject, timer, action });
      ws.send(JSON.stringify({ action, request_id: id, data: body }));
    });
  }

  _receive(message) {
    if (message.event === "state_change") {
      this._applyEvent(message.data);
      return;
    }
    if (message.event === "subscription_ended") {
      this._subscriptionEnded(message.data);
      return;
    }
    const waiter = this._pending.get(message.request_id);
    if (!waiter) return;
    this._pending.delete(message.request_id);
    clearTimeout(waiter.timer);
    this._timers.delete(waiter.timer);
    if (message.status === 200) {
      waiter.resolve(message.data);
      return;
    }
    const errors = message.errors?.length ? message.errors : [`status ${message.status}`];
    const error = new StepstreamError(errors.join(" "), { ...message, errors });
    if (error.status === 401 && typeof this.options.personToken === "function") {
      this._token = undefined; // expired: the next (re)connect fetches a fresh one
      this._loadToken().catch(() => {});
    }
    waiter.reject(error);
  }

  /** @param {StateChange} change */
  _applyEvent(change) {
    const entity = change.entity;
    if (!(entity in this.seq) || change.seq <= this.seq[entity]) return; // seen already
    this.seq[entity] = change.seq;
    if (!this._place(change)) {
      // a flow instance started after our snapshot: its steps come with a fresh one
      this._unplaced.push(change);
      this._refreshSoon();
    }
    for (const fn of [...this._eventListeners]) fn(change);
  }

  /** Applies one change to the live state; false if its flow instance is unknown. */
  _place(change) {
    const flow = this.flows.get(change.flow);
    if (!flow || flow.id !== change.flow_id) return false;
    const itemId = change.entity === "flow" ? flow.id : change.id;
    if (change.seq <= (this._itemSeq.get(itemId) ?? -1)) return true; // older than what we show
    if (change.entity === "step" && !flow.steps.some((s) => s.id === change.id)) return false;
    this._itemSeq.set(itemId, change.seq);
    const next =
      change.entity === "flow"
        ? { ...flow, state: change.state }
        : {
            ...flow,
            steps: flow.steps.map((s) => (s.id === change.id ? { ...s, state: change.state } : s)),
          };
    next.seq = Math.max(flow.seq, change.seq);
    this.flows.set(change.flow, next);
    this._notify(change.flow);
    return true;
  }

  /** Merges one flow instance read at `seq`; items changed later than `seq` keep their state. */
  _applyInstance(instance, seq) {
    const known = this.flows.get(instance.flow);
    const same = known && known.id === instance.id;
    const fresh = (id) => !same || seq > (this._itemSeq.get(id) ?? -1);
    const steps = instance.steps.map((step) => {
      const mine = same && known.steps.find((s) => s.id === step.id);
      if (mine && !fresh(step.id)) return mine;
      this._itemSeq.set(step.id, seq);
      return mine && mine.state === step.state ? mine : { ...step };
    });
    const flowFresh = fresh(instance.id);
    if (flowFresh) this._itemSeq.set(instance.id, seq);
    const state = flowFresh ? instance.state : known.state;
    const unchanged =
      same && state === known.state && steps.every((s, i) => s === known.steps[i]);
    if (unchanged) return;
    const { seq: _ignored, ...rest } = instance;
    this.flows.set(instance.flow, {
      ...rest,
      state,
      steps,
      seq: Math.max(same ? known.seq : 0, seq),
    });
    this._notify(instance.flow);
  }

  /** @param {{seq: number, flows: any[]}} state @param {boolean} replace */
  _applySnapshot(state, replace) {
    if (replace) {
      this.flows.clear();
      this._itemSeq.clear();
      this._unplaced = [];
    }
    const present = new Set(state.flows.map((f) => f.flow));
    for (const instance of state.flows) this._applyInstance(instance, state.seq);
    for (const [identifier, flow] of [...this.flows]) {
      if (!present.has(identifier) && flow.seq <= state.seq) {
        this.flows.delete(identifier);
        this._notify(identifier);
      }
    }
    // events that arrived before their flow instance was known
    const waiting = this._unplaced;
    this._unplaced = [];
    for (const change of waiting) {
      if (!this._place(change) && change.seq > state.seq) this._unplaced.push(change);
    }
    if (this._unplaced.length) this._refreshSoon();
  }

  _refreshSoon() {
    if (this._refreshing) {
      this._refreshAgain = true;
      return;
    }
    const ws = this._ws;
    this._refreshing = this._request("get_state", {})
      .then((state) => ws === this._ws && this._applySnapshot(state, false))
      .catch((e) => console.warn("stepstream: refresh failed:", e.message))
      .finally(() => {
        this._refreshing = null;
        if (this._refreshAgain && this._unplaced.length) {
          this._refreshAgain = false;
          this._refreshSoon();
        }
      });
  }

  /**
   * Marks a flow changed. Listeners hear once the burst of messages it came
   * in is applied, not once per event: one commit's events (a step completes,
   * the next activates) arrive as consecutive messages, and a listener called
   * between them would render a state the server never had (no active step).
   * A burst ends when no message has come for BURST_QUIET_MS (at most
   * BURST_MAX_MS after its first change), so a backlog page is never half shown.
   */
  _notify(flow) {
    this._dirty.add(flow);
    this._deferFlush();
  }

  _deferFlush() {
    if (this._flushTimer !== null) {
      if (Date.now() - this._flushSince >= BURST_MAX_MS) return; // flush soon regardless
      clearTimeout(this._flushTimer);
      this._timers.delete(this._flushTimer);
    } else {
      this._flushSince = Date.now();
    }
    this._flushTimer = this._later(() => this._flush(), BURST_QUIET_MS);
  }

  _flush() {
    this._timers.delete(this._flushTimer);
    this._flushTimer = null;
    const dirty = [...this._dirty];
    this._dirty.clear();
    for (const flow of dirty) {
      for (const fn of [...this._changeListeners]) fn(flow);
    }
  }
}

/**
 * Connects to Stepstream for one person and keeps their flows live.
 * @param {ConnectOptions} options
 * @returns {StepstreamClient}
 */
export function connect(options) {
  return new StepstreamClient(options);
}

export default { connect, backoffDelay, StepstreamClient, StepstreamError };
