// A Stepstream server inside the page, for the renderer's browser tests
// (tests/test_render_browser.py): the SDK is given `WebSocket: FakeSocket` and
// speaks the protocol of docs/protocol.md and CONTRACT's "Content" section to it.
// It keeps one person's flow instances, answers identify, subscriptions,
// transition, complete_step, exit, track, get_content (with the theme, as the real
// server answers it) and get_theme, and pushes
// state_change events like the real server (a burst per commit).

export class FakeServer {
  /** @param {{flows: object[], theme?: object}} setup */
  constructor(setup) {
    this.defs = new Map(setup.flows.map((f) => [f.identifier, f]));
    this.theme = setup.theme ?? { tokens: {} };
    this.instances = new Map();
    this.seq = 0;
    this.sockets = new Set();
    this.tracked = [];
    this.requests = [];
    this.nextId = 1;
  }

  start(flow) {
    const def = this.defs.get(flow);
    const id = `fi-${this.nextId++}`;
    const instance = {
      id,
      flow,
      version: def.version ?? 1,
      state: "active",
      steps: def.steps.map((s, i) => ({ id: `${id}-s${i}`, identifier: s.identifier, name: s.identifier,
        state: [def.initial].flat().includes(s.identifier) ? "active" : "inactive" })),
      seq: ++this.seq,
    };
    this.instances.set(flow, instance);
    // the real server's first events of an instance: the SDK fetches it with get_state
    this.seq += 1;
    for (const ws of this.sockets) {
      ws.push({ event: "state_change", data: { entity: "flow", id, identifier: flow, state: "active",
        previous_state: "inactive", seq: this.seq, person_key: "p", flow, flow_id: id,
        occurred_at: new Date().toISOString(), epoch: "e1", cause: { kind: "call" } } });
    }
    instance.seq = this.seq;
    return instance;
  }

  /** Changes applied in one commit: [{entity, item, state}] -> events pushed together. */
  commit(instance, changes) {
    const events = [];
    for (const change of changes) {
      const item = change.entity === "flow" ? instance : instance.steps.find((s) => s.identifier === change.step);
      const previous = item.state;
      if (previous === change.state) continue;
      item.state = change.state;
      this.seq += 1;
      instance.seq = this.seq;
      events.push({ entity: change.entity, id: item.id, identifier: item.identifier ?? instance.flow,
        state: change.state, previous_state: previous, seq: this.seq, person_key: "p", flow: instance.flow,
        flow_id: instance.id, occurred_at: new Date().toISOString(), epoch: "e1", cause: { kind: "call" } });
    }
    for (const ws of this.sockets) for (const data of events) ws.push({ event: "state_change", data });
  }

  /** A transition by name: from the active step that has it to its target. */
  transition(flow, name) {
    const instance = this.instances.get(flow);
    const def = this.defs.get(flow);
    if (!instance || instance.state !== "active") return [409, "the flow is not active"];
    const t = (def.transitions ?? []).find((t) => t.name === name &&
      instance.steps.find((s) => s.identifier === t.from)?.state === "active");
    if (!t) return [409, `no active step has the transition ${name}`];
    const changes = [{ entity: "step", step: t.from, state: "completed" }, { entity: "step", step: t.to, state: "active" }];
    this.commit(instance, changes);
    return [200, instance];
  }

  completeStep(flow, step) {
    const instance = this.instances.get(flow);
    const def = this.defs.get(flow);
    const active = instance?.steps.find((s) => s.identifier === step)?.state === "active";
    const final = !(def.transitions ?? []).some((t) => t.from === step);
    if (!active || !final) return [409, `${step} is not an active final step`];
    const changes = [{ entity: "step", step, state: "completed" }];
    if (!instance.steps.some((s) => s.identifier !== step && s.state === "active")) {
      changes.push({ entity: "flow", state: "completed" });
    }
    this.commit(instance, changes);
    return [200, instance];
  }

  flowAction(action, flow) {
    const instance = this.instances.get(flow);
    if (!instance) return [404, "no such flow instance"];
    const to = { exit: "exited", pause: "inactive", resume: "active" }[action];
    this.commit(instance, [{ entity: "flow", state: to }]);
    return [200, instance];
  }

  content(flow, version, locale) {
    const def = this.defs.get(flow);
    const steps = def.steps.map((s) => {
      if (!s.content) return { identifier: s.identifier, content: null };
      const { locales, ...base } = s.content;
      const tr = locale && locales?.[locale];
      if (!tr) return { identifier: s.identifier, content: base };
      const merged = { ...base, ...("title" in tr ? { title: tr.title } : {}), ...("body" in tr ? { body: tr.body } : {}) };
      if (tr.buttons) merged.buttons = base.buttons.map((b, i) => ({ ...b, ...tr.buttons[i] }));
      if (tr.items) merged.items = base.items.map((b, i) => ({ ...b, ...tr.items[i] }));
      return { identifier: s.identifier, content: merged };
    });
    const has = locale && def.steps.some((s) => s.content?.locales?.[locale]);
    return [200, { flow, version, locale: has ? locale : "default", steps, theme: this.theme }];
  }

  state() {
    const flows = [...this.instances.values()].map((i) => structuredClone(i));
    return { person_key: "p", seq: this.seq, epoch: "e1", data: {}, flows };
  }

  answer(message) {
    const { action, data = {} } = message;
    this.requests.push(action);
    switch (action) {
      case "identify":
      case "get_state":
        return [200, this.state()];
      case "subscribe_state_change":
        return [200, { entity: data.entity }];
      case "ping":
        return [200, {}];
      case "transition":
        return this.transition(data.flow, data.transition);
      case "complete_step":
        return this.completeStep(data.flow, data.step);
      case "exit":
      case "pause":
      case "resume":
        return this.flowAction(action, data.flow);
      case "track":
        this.tracked.push({ event: data.event, properties: data.properties });
        return [200, { person_key: "p", event: data.event, count: 1, seq: this.seq }];
      case "get_content":
        return this.content(data.flow, data.version, data.locale);
      case "get_theme":
        return [200, this.theme];
      default:
        return [400, `unknown action ${action}`];
    }
  }

  /** The WebSocket class to hand to `connect({WebSocket})`. */
  socketClass() {
    const server = this;
    return class FakeSocket {
      constructor() {
        this.readyState = 0;
        server.sockets.add(this);
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.();
        }, 0);
      }
      push(message) {
        const data = JSON.stringify(message); // as sent now, not as the state is later
        setTimeout(() => this.readyState === 1 && this.onmessage?.({ data }), 0);
      }
      send(text) {
        const message = JSON.parse(text);
        const [status, data] = server.answer(message);
        const body = status === 200 ? { status, data } : { status, errors: [data], code: "conflict" };
        this.push({ request_id: message.request_id, ...body });
      }
      close() {
        this.readyState = 3;
        server.sockets.delete(this);
      }
    };
  }
}
