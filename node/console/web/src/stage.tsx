// Staging a release: the form of the release screen that sends it to
// chosen nodes below ahead of a rollout (POST .../stage); each keeps it
// and fetches its artifacts from the node above it now, and its cache
// keeps them whatever its budget. For system users with the operator
// role on /peers, as the node requires.

import { useEffect, useState } from "preact/hooks";
import { nodesBelow, type NodeBelow } from "./fleet";
import { message } from "./ops-api";
import { onLinkClick } from "./router";
import { refOf, stageRelease, type Release } from "./software-api";

export function StageForm({ rel, onClose }: { rel: Release; onClose: () => void }) {
  const [nodes, setNodes] = useState<NodeBelow[] | null>(null);
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [result, setResult] = useState<{ peer: string; error?: string }[] | null>(null);
  useEffect(() => {
    let live = true;
    nodesBelow().then(
      (r) => live && setNodes(r.nodes),
      (e) => live && (setError(message(e)), setNodes([])),
    );
    return () => {
      live = false;
    };
  }, []);
  const toggle = (mount: string) => {
    const next = new Set(chosen);
    if (next.has(mount)) next.delete(mount);
    else next.add(mount);
    setChosen(next);
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      setResult((await stageRelease(refOf(rel), [...chosen])).staged ?? []);
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="rollout stage" data-test="stage-form" onSubmit={submit}>
      <h2>
        Stage {rel.name} {rel.version}
      </h2>
      <p class="muted">
        Sends the release to the nodes chosen (and to those on the way to them) ahead of a rollout: each fetches its
        artifacts from the node above it now and keeps them whatever its cache budget. The fetches go on in the
        background: <a href="/cache" onClick={onLinkClick("/cache")}>Cache per tier</a> shows them arrive.
      </p>
      {nodes === null && <p class="muted">loading the nodes below…</p>}
      {nodes?.length === 0 && !error && <p class="muted">no node below this one</p>}
      <div class="row">
        {nodes?.map((n) => (
          <label key={n.mount} class="check">
            <input type="checkbox" name="stage_peer" value={n.mount} checked={chosen.has(n.mount)} onChange={() => toggle(n.mount)} />
            <span class="mono">{n.mount}</span>
            {n.role && <span class="muted">{n.role}</span>}
          </label>
        ))}
      </div>
      <div class="row">
        <button type="submit" data-test="stage-submit" disabled={busy || chosen.size === 0}>
          Stage
        </button>
        <button type="button" class="link" onClick={onClose}>
          close
        </button>
      </div>
      {error && (
        <p class="error" role="alert" data-test="stage-error">
          {error}
        </p>
      )}
      {result && (
        <table class="grid" data-test="stage-result">
          <tbody>
            {result.map((r) => (
              <tr key={r.peer} data-peer={r.peer}>
                <td class="mono">{r.peer}</td>
                <td class={r.error ? "error" : "ok"}>{r.error || "staged"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </form>
  );
}
