// The Links screen: this node's federation links in both directions
// (GET /api/v1/peers), read again every few seconds (link counters are
// not contexts, the change stream does not carry them), and the mirrors'
// check against their providers (POST /api/v1/federation/verify).

import { useEffect, useState } from "preact/hooks";
import { APIError, session } from "./api";
import { fmtBytes, fmtTime, hasRole, listPeers, message, verifyFederation, type MountCheck, type Peer } from "./ops-api";
import { onLinkClick, routeTo } from "./router";

export function LinksScreen() {
  const [peers, setPeers] = useState<Peer[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  const [checks, setChecks] = useState<MountCheck[] | null>(null);
  const [verifyError, setVerifyError] = useState("");
  const [verifying, setVerifying] = useState(false);

  useEffect(() => {
    let live = true;
    listPeers().then(
      (r) => live && (setPeers(r.peers ?? []), setError("")),
      (e) => {
        if (!live) return;
        setPeers([]);
        setError(e instanceof APIError && e.status === 501 ? "This node runs no federation." : message(e));
      },
    );
    const t = setTimeout(() => setTick((n) => n + 1), 5000);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [tick]);

  const verify = async () => {
    setVerifying(true);
    setVerifyError("");
    try {
      setChecks((await verifyFederation()).mounts ?? []);
    } catch (e) {
      setVerifyError(message(e));
    } finally {
      setVerifying(false);
    }
  };
  const canVerify = hasRole(session()?.user, "operator", "/peers");
  return (
    <section class="ops links">
      <h1>
        Links
        {canVerify && (
          <button type="button" data-test="verify" disabled={verifying} onClick={verify}>
            {verifying ? "Verifying…" : "Verify mirrors"}
          </button>
        )}
      </h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {peers === null && <p class="muted">loading…</p>}
      {peers?.length === 0 && !error && <p class="muted">No links.</p>}
      <div class="cards">
        {peers?.map((p) => (
          <PeerCard key={`${p.direction}/${p.name}`} p={p} />
        ))}
      </div>
      {verifyError && (
        <p class="error" role="alert" data-test="verify-error">
          {verifyError}
        </p>
      )}
      {checks && (
        <>
          <h2>Mirror check</h2>
          <table class="grid" data-test="verify-result">
            <thead>
              <tr>
                <th>peer</th>
                <th>mount</th>
                <th>match</th>
                <th>seq</th>
                <th>contexts</th>
                <th>digest</th>
                <th>error</th>
              </tr>
            </thead>
            <tbody>
              {checks.length === 0 && (
                <tr>
                  <td colSpan={7} class="muted">
                    no mirrors
                  </td>
                </tr>
              )}
              {checks.map((c) => (
                <tr key={c.mount} data-peer={c.peer}>
                  <td>{c.peer}</td>
                  <td>{c.mount}</td>
                  <td class={c.match ? "ok" : "error"} data-test="match">
                    {c.match ? "match" : "differs"}
                  </td>
                  <td>{c.seq}</td>
                  <td>{c.contexts}</td>
                  <td class="mono">{c.digest?.slice(0, 16)}</td>
                  <td class="error">{c.error}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}

function PeerCard({ p }: { p: Peer }) {
  const mount = p.mount ? routeTo("/tree", p.mount) : "";
  return (
    <div class="card" data-test="peer" data-peer={p.name} data-direction={p.direction}>
      <h2>
        {p.name} <span class="badge">{p.direction}</span>{" "}
        <span class={`link-state ${p.state}`} data-test="peer-state">
          {p.state}
        </span>
      </h2>
      <dl class="meta">
        {p.address && (
          <>
            <dt>address</dt>
            <dd>{p.address}</dd>
          </>
        )}
        {p.mount && (
          <>
            <dt>mount</dt>
            <dd>
              <a href={mount} onClick={onLinkClick(mount)}>
                {p.mount}
              </a>
            </dd>
          </>
        )}
        {p.grant && (
          <>
            <dt>grant</dt>
            <dd>
              {p.grant}
              {p.subtrees?.length ? ` on ${p.subtrees.join(", ")}` : ""}
            </dd>
          </>
        )}
        <dt>since</dt>
        <dd>{fmtTime(p.since)}</dd>
        <dt>lag</dt>
        <dd data-test="lag">
          {p.lag_entries} entries, {p.lag_seconds.toFixed(1)} s (cursor {p.cursor} / head {p.head})
        </dd>
        <dt>RTT</dt>
        <dd data-test="rtt">{p.rtt_ms.toFixed(1)} ms</dd>
        <dt>bytes</dt>
        <dd>
          {fmtBytes(p.bytes_sent)} sent, {fmtBytes(p.bytes_received)} received
        </dd>
        <dt>gaps</dt>
        <dd>{p.gaps}</dd>
        {p.direction === "provider" && (
          <>
            <dt>rejected</dt>
            <dd data-test="rejected">{p.rejected_entries ?? 0}</dd>
          </>
        )}
        {p.last_error && (
          <>
            <dt>last error</dt>
            <dd class="error" data-test="last-error">
              {p.last_error} <span class="muted">{fmtTime(p.last_error_time)}</span>
            </dd>
          </>
        )}
        {p.previous_error && (
          <>
            <dt>previous error</dt>
            <dd data-test="previous-error">
              {p.previous_error} <span class="muted">{fmtTime(p.previous_error_time)}</span>
            </dd>
          </>
        )}
        {p.cert_expires && (
          <>
            <dt>certificate</dt>
            <dd>expires {fmtTime(p.cert_expires)}</dd>
          </>
        )}
        {p.below?.length ? (
          <>
            <dt>below</dt>
            <dd>{p.below.join(", ")}</dd>
          </>
        ) : null}
      </dl>
    </div>
  );
}
