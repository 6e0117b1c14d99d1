// React bindings for the Stepstream SDK: a provider, the `useFlow` hook, and
// `<StepstreamContent>`, which renders a flow's content inside the app's own tree.
// No build step and no bare `import "react"` (a browser cannot resolve one without
// a bundler or an import map): the app hands its own React in, once.
// Contract: docs/clients.md, "React".
//
//   import * as React from "react";
//   import { stepstreamReact } from "https://stepstream.example.com/static/stepstream-react.js";
//   export const { StepstreamProvider, useFlow, StepstreamContent } = stepstreamReact(React);

import { connect } from "./stepstream.js";

const noClient = () => () => {};

/**
 * The bindings, made with the app's React (16.8 or later; 18 for useSyncExternalStore).
 * @param {any} React the app's `react` module
 */
export function stepstreamReact(React) {
  const { createContext, createElement, useCallback, useContext, useEffect, useRef, useState } =
    React;
  const useSyncExternalStore = React.useSyncExternalStore;
  if (typeof useSyncExternalStore !== "function") {
    throw new TypeError("stepstream-react: React 18 or later is needed (useSyncExternalStore)");
  }
  const StepstreamContext = createContext(null);

  /**
   * Connects one client for the person and hands it to everything below. Give `client`
   * instead to share one you made with `connect()` (it is then yours to close).
   */
  function StepstreamProvider({ url, publishableKey, personKey, personToken, client, children }) {
    const [own, setOwn] = useState(null);
    useEffect(() => {
      if (client) return undefined;
      const made = connect({ url, key: publishableKey, personKey, personToken });
      setOwn(made);
      return () => made.close();
    }, [client, url, publishableKey, personKey, personToken]);
    return createElement(StepstreamContext.Provider, { value: client ?? own }, children);
  }

  /** The person's instance of a flow, live: re-renders when it (or one of its steps) changes. */
  function useFlow(identifier) {
    const client = useContext(StepstreamContext);
    const flow = useSyncExternalStore(
      client ? client.subscribe : noClient,
      () => client?.flow(identifier).value,
    );
    const transition = useCallback(
      (name) => client.transition(identifier, name),
      [client, identifier],
    );
    const step = useCallback((id) => flow?.steps.find((s) => s.identifier === id), [flow]);
    return { client, flow, state: flow?.state, step, transition };
  }

  /**
   * Renders the content of `flows`' active steps (all flows when left out) inside this
   * element, live, in `locale`: a banner at its top, a checklist in the app's layout
   * rather than floating; modals, tooltips and hotspots still place themselves on the
   * page. React renders the element empty and never touches what the SDK puts in it.
   */
  function StepstreamContent({ flows, locale, className, style }) {
    const client = useContext(StepstreamContext);
    const root = useRef(null);
    const key = flows ? JSON.stringify(flows) : "";
    useEffect(() => {
      if (!client || !root.current) return undefined;
      let renderer = null;
      let cancelled = false;
      const options = { root: root.current, ...(locale ? { locale } : {}) };
      if (key) options.flows = JSON.parse(key);
      client.render(options).then(
        (made) => {
          if (cancelled) made.stop();
          else renderer = made;
        },
        (error) => console.warn("stepstream: render()", error),
      );
      return () => {
        cancelled = true;
        renderer?.stop();
      };
    }, [client, key, locale]);
    return createElement("div", { ref: root, className, style, "data-stepstream-content": "" });
  }

  return { StepstreamContext, StepstreamProvider, useFlow, StepstreamContent };
}

export default stepstreamReact;
