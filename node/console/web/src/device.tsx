// The Device screen: the context's variables, kept live by the change
// stream (no polling), its labels, and the functions it offers, each with
// a form built from its argument schema. Calling one creates a job; the
// screen waits for it (the call's own wait) and then follows it to its
// final state.

import { useEffect, useRef, useState } from "preact/hooks";
import {
  APIError,
  callFunction,
  canOperate,
  finalStates,
  getContext,
  getJob,
  session,
  type Context,
  type FunctionSpec,
  type Job,
  type Variable,
} from "./api";
import { watch, type StreamState } from "./changes";
import { HistoryChart } from "./history";
import { ArgsForm, buildArgs, initialArgs } from "./schema";
import { Breadcrumbs } from "./tree";

function later(a: Variable | undefined, b: Variable): boolean {
  return !a || !a.time || !b.time || Date.parse(b.time) >= Date.parse(a.time);
}

export function DeviceScreen({ path }: { path: string }) {
  const [ctx, setCtx] = useState<Context | null>(null);
  const [vars, setVars] = useState<Record<string, Variable>>({});
  const [error, setError] = useState("");
  const [stream, setStream] = useState<StreamState>("connecting");
  const [deleted, setDeleted] = useState(false);
  const [reload, setReload] = useState(0);

  useEffect(() => {
    setCtx(null);
    setVars({});
    setError("");
    setDeleted(false);
    // Subscribe first, then read: a change between the two is not lost,
    // and the newer of the two values wins.
    const stop = watch(path, {
      change(c) {
        if (c.path !== path) return;
        if (c.op === "delete") {
          setDeleted(true);
          return;
        }
        if (c.variables) {
          setVars((prev) => {
            const next = { ...prev };
            for (const [k, v] of Object.entries(c.variables!)) if (later(prev[k], v)) next[k] = v;
            return next;
          });
        }
      },
      state: setStream,
      reset: () => setReload((n) => n + 1),
    });
    let live = true;
    getContext(path).then(
      (c) => {
        if (!live) return;
        setCtx(c);
        setVars((prev) => {
          const next = { ...c.variables };
          for (const [k, v] of Object.entries(prev)) if (later(next[k], v)) next[k] = v;
          return next;
        });
      },
      (e) => live && setError(e instanceof APIError ? e.message : String(e)),
    );
    return () => {
      live = false;
      stop();
    };
  }, [path, reload]);

  const names = Object.keys(vars).sort();
  // Numbers and booleans keep history (on the node that owns the device).
  const numeric = names.filter((n) => typeof vars[n].value === "number" || typeof vars[n].value === "boolean");
  const operate = canOperate(session()?.user, path);
  return (
    <section class="device">
      <Breadcrumbs path={path} leaf="/device" />
      <h1>
        {path.split("/").pop() || "/"}
        <span class={`live ${stream}`} data-test="stream" title="change stream">
          {stream === "live" ? "live" : stream}
        </span>
      </h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {deleted && <p class="error">This context was deleted.</p>}
      {ctx && (
        <dl class="meta">
          <dt>type</dt>
          <dd>{ctx.type}</dd>
          {ctx.tenant && (
            <>
              <dt>tenant</dt>
              <dd>{ctx.tenant}</dd>
            </>
          )}
          {Object.entries(ctx.labels).map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>{v}</dd>
            </>
          ))}
        </dl>
      )}
      <h2>Variables</h2>
      <table class="vars">
        <thead>
          <tr>
            <th>name</th>
            <th>value</th>
            <th>time</th>
            <th>quality</th>
          </tr>
        </thead>
        <tbody>
          {names.map((n) => (
            <tr key={n}>
              <td>{n}</td>
              <td data-test={`var-${n}`}>{show(vars[n].value)}</td>
              <td>{vars[n].time ? new Date(vars[n].time!).toLocaleString() : ""}</td>
              <td>{vars[n].quality ?? ""}</td>
            </tr>
          ))}
          {names.length === 0 && (
            <tr>
              <td colSpan={4} class="muted">
                no variables
              </td>
            </tr>
          )}
        </tbody>
      </table>
      {numeric.length > 0 && (
        <>
          <h2>History</h2>
          <HistoryChart path={path} names={numeric} />
        </>
      )}
      {ctx && ctx.functions.length > 0 && (
        <>
          <h2>Functions</h2>
          {!operate && <p class="muted" data-test="read-only">Your role here is read-only: functions are listed, not callable.</p>}
          {ctx.functions.map((f) => (
            <FunctionCard key={f.name} path={path} fn={f} canCall={operate} />
          ))}
        </>
      )}
    </section>
  );
}

function show(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function FunctionCard({ path, fn, canCall }: { path: string; fn: FunctionSpec; canCall: boolean }) {
  const [args, setArgs] = useState(() => initialArgs(fn.args));
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const alive = useRef(true);
  useEffect(
    () => () => {
      alive.current = false;
    },
    [],
  );

  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    setJob(null);
    let a: Record<string, unknown>;
    try {
      a = buildArgs(fn.args, args);
    } catch (err) {
      setError((err as Error).message);
      return;
    }
    setBusy(true);
    try {
      let j = await callFunction(path, fn.name, a);
      setJob(j);
      // The call waited up to its own limit; a job still open is followed
      // (jobs are records, not contexts: the change stream does not carry them).
      const id = j.job ?? j.id;
      while (alive.current && !finalStates.has(j.state)) {
        await new Promise((r) => setTimeout(r, 1000));
        j = { ...(await getJob(id, j.node)), job: id, node: j.node };
        if (alive.current) setJob(j);
      }
    } catch (err) {
      if (alive.current) setError(err instanceof APIError ? `${err.message} (${err.code})` : String(err));
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  return (
    <form class="fn" onSubmit={submit} data-test={`fn-${fn.name}`}>
      <div class="fn-head">
        <strong>{fn.name}</strong>
        {fn.description && <span class="muted"> — {fn.description}</span>}
      </div>
      {canCall && (
        <>
          <ArgsForm schema={fn.args} state={args} onChange={setArgs} idPrefix={fn.name} />
          <button type="submit" disabled={busy} data-test={`call-${fn.name}`}>
            Call {fn.name}
          </button>
        </>
      )}
      {error && (
        <p class="error" role="alert" data-test="call-error">
          {error}
        </p>
      )}
      {job && (
        <div class="job">
          job <code>{job.job ?? job.id}</code>: <span data-test="job-state" class={`state ${job.state}`}>{job.state}</span>
          {job.result !== undefined && <pre data-test="job-result">{JSON.stringify(job.result, null, 2)}</pre>}
          {job.error && <pre class="error" data-test="job-error">{job.error}</pre>}
        </div>
      )}
    </form>
  );
}
