// Stepstream browser SDK: live flow and step state for one person.
// A dependency-free ES module; no build step. Protocol: docs/protocol.md.
//
//   import { connect } from "/static/stepstream.js";
//   const client = connect({ url: "http://localhost:8000", key: "pk_...", personKey: "u-1" });
//   client.flow("onboarding").onChange((flow) => render(flow));
//   await client.transition("onboarding", "next");

/**
 * @typedef {{id: string, identifier: string, name: string, state: string}} StepState
 * @typedef {{id: string, flow: string, version: number, state: string, steps: StepState[]}} FlowState
 * @typedef {{entity: "flow"|"step", id: string, identifier: string, state: string,
 *   previous_state: string, seq: number, person_key: string, flow: string, flow_id: string,
 *   occurred_at: string}} StateChange
 * @typedef {{url: string, key: string, personKey: string, personToken?: string,
 *   data?: object, WebSocket?: typeof WebSocket, maxBackoffMs?: number}} ConnectOptions
 */

const FATAL_CLOSE_CODES = new Set([4401, 4403]);

/** Turns an http(s) base URL into the ws(s) endpoint. */
function socketUrl(base, key) {
  const url = new URL("/ws", base.replace(/^http/, "ws"));
  url.searchParams.set("key", key);
  return url.toString();
}

class FlowHandle {
  constructor(client, identifier) {
    this.client = client;
    this.identifier = identifier;
  }

  /** @returns {FlowState|undefined} */
  get value() {
    return this.client.flows.get(this.identifier);
  }

  get state() {
    return this.value?.state;
  }

  /** @param {string} identifier @returns {StepState|undefined} */
  step(identifier) {
    return this.value?.steps.find((s) => s.identifier === identifier);
  }

  /** Calls fn(flowState) now and after every change; returns an unsubscribe function. */
  onChange(fn) {
    const listener = (flow) => flow === this.identifier && fn(this.value);
    this.client.changeListeners.add(listener);
    if (this.value) fn(this.value);
    return () => this.client.changeListeners.delete(listener);
  }
}

export class StepstreamClient {
  /** @param {ConnectOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {Map<string, FlowState>} */
    this.flows = new Map();
    this.lastSeq = { flow: 0, step: 0 };
    this.changeListeners = new Set();
    this.eventListeners = new Set();
    this.statusListeners = new Set();
    this.status = "connecting";
    this.pending = new Map();
    this.nextId = 1;
    this.backoff = 250;
    this.closed = false;
    this.snapshotted = false;
    this.ready = new Promise((resolve) => (this.resolveReady = resolve));
    this.open();
  }

  flow(identifier) {
    return new FlowHandle(this, identifier);
  }

  /** Calls fn(stateChange) for every event applied. */
  onEvent(fn) {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** Calls fn(status): "connecting" | "live" | "reconnecting" | "closed". */
  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.status);
    return () => this.statusListeners.delete(fn);
  }

  /** Calls a transition; resolves with the instance, rejects with the server's errors. */
  async transition(flow, transition) {
    await this.ready;
    const instance = await this.request("transition", { flow, transition });
    return instance;
  }

  close() {
    this.closed = true;
    this.setStatus("closed");
    this.ws?.close(1000);
  }

  // -- internals ---------------------------------------------------------

  setStatus(status) {
    this.status = status;
    for (const fn of this.statusListeners) fn(status);
  }

  request(action, data = {}) {
    const id = this.nextId++;
    const body = { person_key: this.options.personKey, ...data };
    if (this.options.personToken) body.person_token = this.options.personToken;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ action, request_id: id, data: body }));
    });
  }

  open() {
    const Impl = this.options.WebSocket || globalThis.WebSocket;
    const ws = new Impl(socketUrl(this.options.url, this.options.key));
    this.ws = ws;
    ws.onopen = () => this.start().catch((e) => console.warn("stepstream:", e));
    ws.onmessage = (message) => this.receive(JSON.parse(message.data));
    ws.onclose = (event) => this.reconnect(event.code);
  }

  async start() {
    if (!this.snapshotted) {
      const state = await this.request("identify", { data: this.options.data || {} });
      this.applySnapshot(state);
      this.snapshotted = true;
    }
    await Promise.all([
      this.request("subscribe_state_change", { entity: "flow", since_seq: this.lastSeq.flow }),
      this.request("subscribe_state_change", { entity: "step", since_seq: this.lastSeq.step }),
    ]);
    this.backoff = 250;
    this.setStatus("live");
    this.resolveReady();
  }

  reconnect(code) {
    for (const { reject } of this.pending.values()) reject(new Error("connection closed"));
    this.pending.clear();
    if (this.closed) return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this.setStatus("closed");
      return;
    }
    this.setStatus("reconnecting");
    const delay = this.backoff * (0.5 + Math.random());
    this.backoff = Math.min(this.backoff * 2, this.options.maxBackoffMs || 10000);
    setTimeout(() => this.open(), delay);
  }

  receive(message) {
    if (message.event === "state_change") {
      this.applyEvent(message.data);
      return;
    }
    const waiter = this.pending.get(message.request_id);
    if (!waiter) return;
    this.pending.delete(message.request_id);
    if (message.status === 200) waiter.resolve(message.data);
    else waiter.reject(Object.assign(new Error(message.errors.join(" ")), message));
  }

  applySnapshot(state) {
    this.flows.clear();
    for (const flow of state.flows) this.flows.set(flow.flow, flow);
    this.lastSeq = { flow: state.seq, step: state.seq };
    for (const flow of this.flows.keys()) this.notify(flow);
  }

  async refresh() {
    const state = await this.request("get_state");
    const seen = { ...this.lastSeq };
    this.applySnapshot(state);
    this.lastSeq = { flow: Math.max(seen.flow, state.seq), step: Math.max(seen.step, state.seq) };
  }

  applyEvent(change) {
    if (change.seq <= this.lastSeq[change.entity]) return; // already applied
    this.lastSeq[change.entity] = change.seq;
    const flow = this.flows.get(change.flow);
    if (!flow || flow.id !== change.flow_id) {
      // a flow started since the snapshot: its steps are only in a fresh snapshot
      this.refresh().catch((e) => console.warn("stepstream:", e));
    } else if (change.entity === "flow") {
      flow.state = change.state;
    } else {
      const step = flow.steps.find((s) => s.id === change.id);
      if (step) step.state = change.state;
    }
    for (const fn of this.eventListeners) fn(change);
    this.notify(change.flow);
  }

  notify(flow) {
    for (const fn of this.changeListeners) fn(flow);
  }
}

/** @param {ConnectOptions} options */
export function connect(options) {
  return new StepstreamClient(options);
}

export default { connect, StepstreamClient };
