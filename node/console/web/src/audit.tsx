// The Audit screen: the node's audit trail, newest first
// (GET /api/v1/audit). System administrators see every record, a tenant
// administrator its tenant's; the node refuses anyone else (403).

import { useEffect, useState } from "preact/hooks";
import { fmtTime, listAudit, message, type AuditRecord } from "./ops-api";

const limits = [100, 500, 2000];

export function AuditScreen() {
  const [limit, setLimit] = useState(100);
  const [records, setRecords] = useState<AuditRecord[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let live = true;
    listAudit(limit).then(
      (r) => live && (setRecords(r.records ?? []), setError("")),
      (e) => live && (setRecords([]), setError(message(e))),
    );
    return () => {
      live = false;
    };
  }, [limit, tick]);

  return (
    <section class="ops audit">
      <h1>
        Audit log
        <button type="button" class="link" data-test="refresh" onClick={() => setTick((n) => n + 1)}>
          refresh
        </button>
        <select value={String(limit)} onChange={(e) => setLimit(Number(e.currentTarget.value))}>
          {limits.map((l) => (
            <option key={l} value={String(l)}>
              latest {l}
            </option>
          ))}
        </select>
      </h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table class="grid" data-test="audit">
        <thead>
          <tr>
            <th>time</th>
            <th>who</th>
            <th>via</th>
            <th>op</th>
            <th>path / target</th>
            <th>outcome</th>
            <th>error</th>
          </tr>
        </thead>
        <tbody>
          {records === null && (
            <tr>
              <td colSpan={7} class="muted">
                loading…
              </td>
            </tr>
          )}
          {records?.map((r, i) => (
            <tr key={r.id ?? i} data-op={r.op} data-outcome={r.outcome}>
              <td>{fmtTime(r.time)}</td>
              <td>
                {r.user}
                {r.system ? " (system)" : r.tenant ? ` (${r.tenant})` : ""}
              </td>
              <td data-test="via">{(r.via?.length ? r.via : r.consumer ? [r.consumer] : []).join(" → ")}</td>
              <td class="mono">{r.op}</td>
              <td>
                {r.path}
                {r.function && ` ${r.function}()`}
                {r.target && <span class="muted"> {r.target}</span>}
                {r.job && <span class="muted"> job {r.job}</span>}
                {r.node && <span class="muted"> at {r.node}</span>}
              </td>
              <td class={`outcome ${r.outcome}`}>{r.outcome}</td>
              <td class="error">{r.error}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
