// The Overview screen, the landing screen: devices online and offline here
// and under each mounted peer (counted through search, which has no count:
// at most countCap per figure), the links with their state and lag, and
// the jobs in progress. Refreshed by its button, not polled.

import { useEffect, useState } from "preact/hooks";
import { APIError, type Job } from "./api";
import { countAll, getPeers, listJobs, type Peer, type Query } from "./fleet";
import { onLinkClick, routeTo } from "./router";

const countCap = 10000;
const activeStates = ["queued", "delivered", "running"];

interface Count {
  n: number;
  more: boolean;
}
interface Scope {
  label: string;
  path: string;
  online?: Count;
  offline?: Count;
  error?: string;
}

const fmt = (c?: Count) => (c ? `${c.n}${c.more ? "+" : ""}` : "…");
const msg = (e: unknown) => (e instanceof APIError || e instanceof Error ? e.message : String(e));

export function OverviewScreen() {
  const [peers, setPeers] = useState<Peer[] | null>(null);
  const [peersErr, setPeersErr] = useState("");
  const [scopes, setScopes] = useState<Scope[]>([]);
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [jobsErr, setJobsErr] = useState("");
  const [round, setRound] = useState(0);

  useEffect(() => {
    let stale = false;
    (async () => {
      let ps: Peer[] = [];
      try {
        ps = (await getPeers()).peers ?? [];
        if (!stale) setPeers(ps);
      } catch (e) {
        // 501 (no federation) and 403 (no viewer on /peers) leave the
        // devices of this node only.
        if (!stale) setPeersErr(e instanceof APIError && e.status === 501 ? "no federation on this node" : msg(e));
      }
      const list: Scope[] = [{ label: "this node", path: "/devices" }];
      for (const p of ps) if (p.direction === "provider" && p.mount) list.push({ label: p.name, path: p.mount });
      if (!stale) setScopes(list);
      await Promise.all(
        list.map(async (s, i) => {
          const q = (online: "true" | "false"): Query => ({ path: s.path, type: "device", tenant: "", online, filters: "" });
          try {
            const [on, off] = await Promise.all([countAll(q("true"), countCap), countAll(q("false"), countCap)]);
            if (!stale) setScopes((prev) => prev.map((x, j) => (j === i ? { ...x, online: on, offline: off } : x)));
          } catch (e) {
            const err = e instanceof APIError && e.status === 404 ? "none" : msg(e);
            if (!stale) setScopes((prev) => prev.map((x, j) => (j === i ? { ...x, error: err } : x)));
          }
        }),
      );
    })();
    Promise.all(activeStates.map((st) => listJobs(st, 20)))
      .then((pages) => !stale && setJobs(pages.flatMap((p) => p.jobs ?? [])))
      .catch((e) => !stale && setJobsErr(e instanceof APIError && e.status === 501 ? "no jobs on this node" : msg(e)));
    return () => {
      stale = true;
    };
  }, [round]);

  return (
    <section class="overview">
      <h2>
        Devices{" "}
        <button type="button" class="link" data-test="refresh" onClick={() => setRound(round + 1)}>
          refresh
        </button>
      </h2>
      <table class="vars" data-test="device-counts">
        <thead>
          <tr>
            <th>where</th>
            <th>subtree</th>
            <th>online</th>
            <th>offline</th>
          </tr>
        </thead>
        <tbody>
          {scopes.map((s) => (
            <tr key={s.path} data-scope={s.path}>
              <td>{s.label}</td>
              <td>
                <a href={routeTo("/tree", s.path)} onClick={onLinkClick(routeTo("/tree", s.path))}>
                  {s.path}
                </a>
              </td>
              <td data-test="online">{s.error ? "" : fmt(s.online)}</td>
              <td data-test="offline">{s.error ?? fmt(s.offline)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Links</h2>
      {peersErr && <p class="muted">{peersErr}</p>}
      {peers?.length === 0 && <p class="muted">no links</p>}
      {peers && peers.length > 0 && (
        <table class="vars" data-test="links">
          <thead>
            <tr>
              <th>peer</th>
              <th>direction</th>
              <th>state</th>
              <th>lag</th>
              <th>RTT</th>
              <th>last error</th>
            </tr>
          </thead>
          <tbody>
            {peers.map((p) => (
              <tr key={p.direction + p.name} data-peer={p.name}>
                <td>{p.name}</td>
                <td>{p.direction}</td>
                <td class={`link-state ${p.state}`} data-test="link-state">
                  {p.state}
                </td>
                <td>
                  {p.lag_entries ?? 0} entries{p.lag_seconds ? `, ${p.lag_seconds.toFixed(1)} s` : ""}
                </td>
                <td>{p.rtt_ms !== undefined ? `${p.rtt_ms} ms` : ""}</td>
                <td>{p.last_error ? `${p.last_error} (${p.last_error_time ?? ""})` : ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Jobs in progress</h2>
      {jobsErr && <p class="muted">{jobsErr}</p>}
      {jobs?.length === 0 && <p class="muted">none</p>}
      {jobs && jobs.length > 0 && (
        <table class="vars" data-test="active-jobs">
          <thead>
            <tr>
              <th>job</th>
              <th>device</th>
              <th>function</th>
              <th>state</th>
            </tr>
          </thead>
          <tbody>
            {jobs.map((j) => (
              <tr key={j.id}>
                <td>{j.id}</td>
                <td>
                  <a href={routeTo("/device", j.path)} onClick={onLinkClick(routeTo("/device", j.path))}>
                    {j.path}
                  </a>
                </td>
                <td>{j.function}</td>
                <td class={`state ${j.state}`}>{j.state}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p class="muted">
        Warnings and alerts are not listed here: the API reads events one context at a time, with no search over a
        subtree.
      </p>
    </section>
  );
}
