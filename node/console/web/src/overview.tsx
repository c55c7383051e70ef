// The Overview screen, the landing screen: devices online and offline per
// tier and per node (this node and every node below it, found as the peer
// contexts under /peers, each labelled with its role; counted by search's
// count=true, which stops at 200,000), the links and
// their health, the recent warnings and alerts of the whole subtree (the
// event feed) and the jobs in progress. Read when the screen opens and
// on refresh, not polled.

import { useEffect, useState } from "preact/hooks";
import { APIError, type Job } from "./api";
import {
  countMatches,
  getFeed,
  getPeers,
  listJobs,
  nodesBelow,
  type FeedEvent,
  type NodeBelow,
  type Peer,
  type Query,
} from "./fleet";
import { onLinkClick, routeTo } from "./router";

const activeStates = ["queued", "delivered", "running"];
const feedPage = 25;

interface Count {
  n: number;
  more: boolean;
}

/** NodeRow is one node's own devices (its /devices). */
interface NodeRow {
  name: string;
  role: string;
  tier: number; // 0: this node
  devices: string; // the subtree counted
  via: string; // the provider of this node it is reached through
  online?: Count;
  offline?: Count;
  error?: string;
}

const fmt = (c?: Count) => (c ? `${c.n}${c.more ? "+" : ""}` : "…");
const msg = (e: unknown) => (e instanceof APIError || e instanceof Error ? e.message : String(e));

function add(a: Count | undefined, b: Count | undefined): Count | undefined {
  if (!a || !b) return undefined;
  return { n: a.n + b.n, more: a.more || b.more };
}

/** tierLabel names a group of nodes: their role, else how far below. */
const tierLabel = (r: NodeRow) => (r.tier === 0 ? "this node" : r.role || `${r.tier} tier${r.tier > 1 ? "s" : ""} below`);

/** Health is a link's health as the Overview judges it: down when not
 * connected, degraded with an error, gaps or a lag of a minute or more. */
export function linkHealth(p: Peer): { health: "ok" | "degraded" | "down"; why: string } {
  if (p.state !== "connected") return { health: "down", why: p.state };
  if (p.last_error) return { health: "degraded", why: p.last_error };
  if ((p.lag_seconds ?? 0) >= 60) return { health: "degraded", why: `${Math.round(p.lag_seconds ?? 0)} s behind` };
  if ((p.gaps ?? 0) > 0) return { health: "degraded", why: `${p.gaps} gap${p.gaps === 1 ? "" : "s"}` };
  return { health: "ok", why: "" };
}

/** contextLink routes a device to its Device screen, anything else to the Tree. */
function contextLink(path: string) {
  const to = /\/devices\/[^/]+$/.test(path) ? routeTo("/device", path) : routeTo("/tree", path);
  return (
    <a href={to} onClick={onLinkClick(to)}>
      {path}
    </a>
  );
}

function payloadText(p: unknown): string {
  if (p === undefined || p === null) return "";
  const s = JSON.stringify(p);
  return s.length > 120 ? s.slice(0, 117) + "…" : s;
}

export function OverviewScreen() {
  const [peers, setPeers] = useState<Peer[] | null>(null);
  const [peersErr, setPeersErr] = useState("");
  const [rows, setRows] = useState<NodeRow[]>([]);
  const [nodesErr, setNodesErr] = useState("");
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [jobsErr, setJobsErr] = useState("");
  const [events, setEvents] = useState<FeedEvent[] | null>(null);
  const [eventsNext, setEventsNext] = useState<number | undefined>(undefined);
  const [eventsErr, setEventsErr] = useState("");
  const [alertsOnly, setAlertsOnly] = useState(false);
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
      // The nodes below: every peer context under /peers (a mount of a
      // node below republishes its own mounts), else the providers the
      // links name.
      let below: NodeBelow[] = [];
      try {
        const found = await nodesBelow();
        below = found.nodes;
        if (found.more && !stale) setNodesErr(`only the first ${below.length} nodes below are shown`);
      } catch (e) {
        if (!(e instanceof APIError && (e.status === 404 || e.status === 403)) && !stale) setNodesErr(msg(e));
        below = ps
          .filter((p) => p.direction === "provider" && p.mount)
          .map((p) => ({ name: p.name, mount: p.mount!, role: p.role ?? "", tier: 1, via: p.name }));
      }
      const list: NodeRow[] = [
        { name: "this node", role: "", tier: 0, devices: "/devices", via: "" },
        ...below.map((n) => ({ name: n.name, role: n.role, tier: n.tier, devices: `${n.mount}/devices`, via: n.via })),
      ];
      if (!stale) setRows(list);
      await Promise.all(
        list.map(async (s, i) => {
          const q = (online: "true" | "false"): Query => ({ path: s.devices, type: "device", tenant: "", online, filters: "" });
          try {
            const count = async (online: "true" | "false"): Promise<Count> => {
              const c = await countMatches(q(online));
              return { n: c.total, more: c.capped };
            };
            const [on, off] = await Promise.all([count("true"), count("false")]);
            if (!stale) setRows((prev) => prev.map((x, j) => (j === i ? { ...x, online: on, offline: off } : x)));
          } catch (e) {
            // A node without devices of its own has no /devices.
            const none = e instanceof APIError && e.status === 404;
            const zero = { n: 0, more: false };
            if (!stale)
              setRows((prev) =>
                prev.map((x, j) => (j === i ? (none ? { ...x, online: zero, offline: zero } : { ...x, error: msg(e) }) : x)),
              );
          }
        }),
      );
    })();
    Promise.all(activeStates.map((st) => listJobs(st, 20)))
      .then((pages) => !stale && setJobs(pages.flatMap((p) => p.jobs ?? [])))
      .catch((e) => !stale && setJobsErr(e instanceof APIError && e.status === 501 ? "no jobs on this node" : msg(e)));
    setEvents(null);
    setEventsErr("");
    getFeed("/", alertsOnly ? "alert" : "warning", feedPage)
      .then((p) => {
        if (stale) return;
        setEvents(p.events ?? []);
        setEventsNext(p.next);
      })
      .catch((e) => !stale && setEventsErr(e instanceof APIError && e.status === 501 ? "no event feed on this node" : msg(e)));
    return () => {
      stale = true;
    };
  }, [round, alertsOnly]);

  const older = () => {
    if (!eventsNext) return;
    getFeed("/", alertsOnly ? "alert" : "warning", feedPage, eventsNext)
      .then((p) => {
        setEvents((prev) => [...(prev ?? []), ...(p.events ?? [])]);
        setEventsNext(p.next);
      })
      .catch((e) => setEventsErr(msg(e)));
  };

  // Tiers: this node, then the roles (or depths) of the nodes below, in
  // the order first met going down.
  const tiers: { label: string; nodes: number; online?: Count; offline?: Count; error: boolean }[] = [];
  for (const r of [...rows].sort((a, b) => a.tier - b.tier)) {
    const label = tierLabel(r);
    let t = tiers.find((x) => x.label === label);
    if (!t) {
      t = { label, nodes: 0, online: { n: 0, more: false }, offline: { n: 0, more: false }, error: false };
      tiers.push(t);
    }
    t.nodes++;
    t.online = add(t.online, r.online);
    t.offline = add(t.offline, r.offline);
    t.error = t.error || r.error !== undefined;
  }
  const linkOf = (name: string) => peers?.find((p) => p.direction === "provider" && p.name === name);
  const health = (peers ?? []).map(linkHealth);
  const healthCount = (h: string) => health.filter((x) => x.health === h).length;

  return (
    <section class="overview">
      <h2>
        Devices by tier{" "}
        <button type="button" class="link" data-test="refresh" onClick={() => setRound(round + 1)}>
          refresh
        </button>
      </h2>
      <table class="vars" data-test="tier-counts">
        <thead>
          <tr>
            <th>tier</th>
            <th>nodes</th>
            <th>online</th>
            <th>offline</th>
          </tr>
        </thead>
        <tbody>
          {tiers.map((t) => (
            <tr key={t.label} data-tier={t.label}>
              <td>{t.label}</td>
              <td>{t.nodes}</td>
              <td data-test="online">{t.error ? "?" : fmt(t.online)}</td>
              <td data-test="offline">{t.error ? "?" : fmt(t.offline)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Devices by node</h2>
      {nodesErr && <p class="muted">{nodesErr}</p>}
      <table class="vars" data-test="device-counts">
        <thead>
          <tr>
            <th>node</th>
            <th>devices</th>
            <th>role</th>
            <th>link</th>
            <th>online</th>
            <th>offline</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((s) => {
            const link = s.tier > 0 ? linkOf(s.via) : undefined;
            return (
              <tr key={s.devices} data-node={s.tier === 0 ? "" : s.name} data-scope={s.devices}>
                <td>{s.name}</td>
                <td>
                  <a href={routeTo("/tree", s.devices)} onClick={onLinkClick(routeTo("/tree", s.devices))}>
                    {s.devices}
                  </a>
                </td>
                <td>{s.tier === 0 ? "" : s.role || "?"}</td>
                <td data-test="node-link">
                  {s.tier === 0 ? "" : link ? `${s.tier > 1 ? `via ${s.via}: ` : ""}${link.state}` : `via ${s.via}`}
                </td>
                <td data-test="online">{s.error ? "" : fmt(s.online)}</td>
                <td data-test="offline">{s.error ?? fmt(s.offline)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <h2>Links</h2>
      {peersErr && <p class="muted">{peersErr}</p>}
      {peers?.length === 0 && <p class="muted">no links</p>}
      {peers && peers.length > 0 && (
        <>
          <p class="muted" data-test="link-health">
            {healthCount("ok")} healthy, {healthCount("degraded")} degraded, {healthCount("down")} down
          </p>
          <table class="vars" data-test="links">
            <thead>
              <tr>
                <th>peer</th>
                <th>direction</th>
                <th>role</th>
                <th>state</th>
                <th>health</th>
                <th>lag</th>
                <th>RTT</th>
                <th>gaps</th>
                <th>last error</th>
              </tr>
            </thead>
            <tbody>
              {peers.map((p, i) => (
                <tr key={p.direction + p.name} data-peer={p.name}>
                  <td>{p.name}</td>
                  <td>{p.direction}</td>
                  <td>{p.role ?? ""}</td>
                  <td class={`link-state ${p.state}`} data-test="link-state">
                    {p.state}
                  </td>
                  <td class={`health ${health[i].health}`} data-test="link-health" title={health[i].why}>
                    {health[i].health}
                    {health[i].why && health[i].health !== "down" ? `: ${health[i].why}` : ""}
                  </td>
                  <td>
                    {p.lag_entries ?? 0} entries{p.lag_seconds ? `, ${p.lag_seconds.toFixed(1)} s` : ""}
                  </td>
                  <td>{p.rtt_ms !== undefined ? `${p.rtt_ms} ms` : ""}</td>
                  <td>{p.gaps ?? 0}</td>
                  <td>{p.last_error ? `${p.last_error} (${p.last_error_time ?? ""})` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>
        Recent warnings and alerts{" "}
        <label class="muted">
          <input
            type="checkbox"
            data-test="alerts-only"
            checked={alertsOnly}
            onChange={(e) => setAlertsOnly((e.target as HTMLInputElement).checked)}
          />{" "}
          alerts only
        </label>
      </h2>
      {eventsErr && <p class="muted">{eventsErr}</p>}
      {events?.length === 0 && <p class="muted">none</p>}
      {events && events.length > 0 && (
        <table class="vars" data-test="recent-events">
          <thead>
            <tr>
              <th>time</th>
              <th>where</th>
              <th>level</th>
              <th>event</th>
              <th>payload</th>
            </tr>
          </thead>
          <tbody>
            {events.map((ev) => (
              <tr key={ev.seq} data-event={ev.name ?? ""} data-path={ev.path}>
                <td>{new Date(ev.time).toLocaleString()}</td>
                <td>{contextLink(ev.path)}</td>
                <td class={`level ${ev.level}`} data-test="level">
                  {ev.level}
                </td>
                <td>{ev.name ?? ""}</td>
                <td class="payload">{payloadText(ev.payload)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {eventsNext !== undefined && eventsNext > 0 && (
        <button type="button" class="link" data-test="older-events" onClick={older}>
          older
        </button>
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
    </section>
  );
}
