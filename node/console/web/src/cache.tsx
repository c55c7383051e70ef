// The artifact cache of each tier (GET /api/v1/software/cache): this node
// and the nodes below it, with their budget, use, objects (pinned for an
// active rollout or pre-staged) and the bytes fetched from the tier above
// and served from the cache, and the artifacts uploaded to it. The node
// shows it to system users; a node without the route says so. The table
// is a list of columns: a field the API adds is one more entry.

import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { APIError } from "./api";
import { fmtBytes, fmtTime, message } from "./ops-api";
import { StatusRow } from "./pager";
import { getCache, type CacheTier } from "./software-api";

/** Cache figures are records, not contexts: read again every 10 s. */
const refreshMs = 10_000;

interface Column {
  key: string;
  title: string;
  cell: (t: CacheTier) => ComponentChildren;
  hint?: string;
}

const usedOf = (t: CacheTier) =>
  t.budget_bytes > 0 ? (
    <>
      {fmtBytes(t.used_bytes)} <span class="muted">({Math.round((100 * t.used_bytes) / t.budget_bytes)}%)</span>
    </>
  ) : (
    fmtBytes(t.used_bytes)
  );

const columns: Column[] = [
  { key: "node", title: "node", cell: (t) => (t.path === "/" ? `${t.node} (this node)` : t.node) },
  { key: "path", title: "path", cell: (t) => <span class="mono">{t.path}</span> },
  { key: "role", title: "role", cell: (t) => t.role ?? "" },
  { key: "budget", title: "budget", cell: (t) => (t.budget_bytes > 0 ? fmtBytes(t.budget_bytes) : "unlimited") },
  { key: "used", title: "used", cell: usedOf },
  { key: "objects", title: "objects", cell: (t) => t.objects },
  { key: "pinned", title: "pinned", cell: (t) => t.pinned, hint: "objects an active rollout or a staging needs: never evicted" },
  { key: "fetching", title: "fetching", cell: (t) => t.fetching ?? 0, hint: "fetches from the tier above in progress" },
  { key: "fetched", title: "fetched from above", cell: (t) => fmtBytes(t.fetched_bytes), hint: "since the node started" },
  { key: "served", title: "served", cell: (t) => fmtBytes(t.served_bytes), hint: "to devices and to the tiers below, since the node started" },
  {
    key: "origin",
    title: "uploaded here",
    cell: (t) => `${t.origin_objects ?? 0} (${fmtBytes(t.origin_bytes ?? 0)})`,
    hint: "artifacts of the releases uploaded to this node: never evicted",
  },
  { key: "updated", title: "updated", cell: (t) => fmtTime(t.updated) },
];

/** The columns naming a tier, shown also for a tier that did not answer. */
const named = 3;

export function CacheScreen() {
  const [tiers, setTiers] = useState<CacheTier[] | null>(null);
  const [error, setError] = useState("");
  const [absent, setAbsent] = useState(false);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    getCache().then(
      (c) => {
        if (!live) return;
        const ts = c.tiers ?? [];
        // This node first, then the nodes below in path order.
        ts.sort((a, b) => (a.path === "/" ? -1 : b.path === "/" ? 1 : a.path.localeCompare(b.path)));
        setTiers(ts);
        setError("");
        setAbsent(false);
      },
      (e) => {
        if (!live) return;
        setTiers([]);
        const gone = e instanceof APIError && (e.status === 404 || e.status === 501);
        setAbsent(gone);
        setError(gone ? "" : message(e));
      },
    );
    return () => {
      live = false;
    };
  }, [tick]);
  useEffect(() => {
    if (absent) return;
    const t = setTimeout(() => setTick((n) => n + 1), refreshMs);
    return () => clearTimeout(t);
  }, [tiers, absent]);
  return (
    <>
      <h1>Cache per tier</h1>
      {absent && (
        <p class="muted" data-test="cache-absent">
          The software cache is not available on this node: it does not serve its cache state
          (GET /api/v1/software/cache).
        </p>
      )}
      {error && (
        <p class="error" role="alert" data-test="cache-error">
          {error}
        </p>
      )}
      {!absent && (
        <table class="grid cache" data-test="cache-tiers">
          <thead>
            <tr>
              {columns.map((c) => (
                <th key={c.key} title={c.hint}>
                  {c.title}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {tiers === null && <StatusRow cols={columns.length} text="loading…" />}
            {tiers?.length === 0 && !error && <StatusRow cols={columns.length} text="no tier reports a cache" />}
            {tiers?.map((t) => (
              <tr key={t.path} data-tier={t.path}>
                {(t.error ? columns.slice(0, named) : columns).map((c) => (
                  <td key={c.key} data-col={c.key}>
                    {c.cell(t)}
                  </td>
                ))}
                {t.error && (
                  <td colSpan={columns.length - named} class="error" data-col="error">
                    {t.error}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
