// The live change stream (GET /api/v1/changes, Server-Sent Events), read
// with fetch so that the bearer token travels in a header, never in a URL.
// It reconnects with Last-Event-ID after a failure, and stops on a 401
// (the session is over) or when closed.

import { authHeaders, endSession } from "./api";

export interface Change {
  seq: number;
  time: string;
  op: string;
  path: string;
  type?: string;
  tenant?: string;
  labels?: Record<string, string>;
  variables?: Record<string, { value: unknown; type?: string; time?: string; quality?: string }>;
}

export type StreamState = "connecting" | "live" | "retrying" | "closed";

export interface StreamHandlers {
  change(c: Change): void;
  state?(s: StreamState, detail?: string): void;
  /** reset: the node could not resume from our cursor; reload what is shown. */
  reset?(): void;
}

/** parseSSE splits a buffer into complete events, returning the rest. */
export function parseSSE(buf: string): { events: { id?: string; event: string; data: string }[]; rest: string } {
  const events: { id?: string; event: string; data: string }[] = [];
  buf = buf.replace(/\r\n?/g, "\n");
  let i: number;
  while ((i = buf.indexOf("\n\n")) >= 0) {
    const block = buf.slice(0, i);
    buf = buf.slice(i + 2);
    let id: string | undefined;
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const c = line.indexOf(":");
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? "" : line.slice(c + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length > 0 || id !== undefined) events.push({ id, event, data: data.join("\n") });
  }
  return { events, rest: buf };
}

/** watch follows the changes under path until the returned function is called. */
export function watch(path: string, h: StreamHandlers): () => void {
  const ctrl = new AbortController();
  let lastID: string | undefined;
  let attempt = 0;
  const state = (s: StreamState, d?: string) => h.state?.(s, d);

  const run = async () => {
    while (!ctrl.signal.aborted) {
      state(attempt === 0 ? "connecting" : "retrying");
      try {
        const headers: Record<string, string> = { ...authHeaders(), Accept: "text/event-stream" };
        if (lastID) headers["Last-Event-ID"] = lastID;
        const res = await fetch(`/api/v1/changes?${new URLSearchParams({ path })}`, {
          headers,
          signal: ctrl.signal,
          cache: "no-store",
        });
        if (res.status === 401) {
          endSession();
          break;
        }
        if (!res.ok || !res.body) throw new Error(`change stream: ${res.status}`);
        state("live");
        attempt = 0;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const parsed = parseSSE(buf + value);
          buf = parsed.rest;
          for (const ev of parsed.events) {
            if (ev.id) lastID = ev.id;
            if (ev.event === "reset") h.reset?.();
            else if (ev.event === "change") {
              try {
                h.change(JSON.parse(ev.data) as Change);
              } catch {
                // A malformed event is skipped; the next one carries on.
              }
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) break;
        state("retrying", String(e));
      }
      if (ctrl.signal.aborted) break;
      attempt++;
      const delay = Math.min(500 * 2 ** Math.min(attempt, 5), 15000);
      await new Promise((r) => setTimeout(r, delay));
    }
    state("closed");
  };
  run();
  return () => ctrl.abort();
}
