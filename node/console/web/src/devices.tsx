// The Devices screen: a list over the whole subtree below this node (mounted
// peers included), filtered and paged on the node by GET /api/v1/search
// (keyset cursor; path order, or sorted on the node by a column), with a
// choice of label and variable columns, the number of matches, and a CSV
// export of the whole query, read page by page. The browser holds one
// page, never the fleet. The query, sort and page size are the URL's
// (/devices?path=/peers/eu&q=site%3Dlyon&sort=-var.temp), so a list can be
// bookmarked, reloaded, shared and restored by back/forward. An operator
// may run a function on every device the query matches (a bulk job whose
// target filter is the query: bulk.tsx).

import { useEffect, useRef, useState } from "preact/hooks";
import { APIError, session } from "./api";
import { RunOnDevices } from "./bulk";
import { cell, columnKey, countMatches, exportCSV, search, searchParams, type Column, type Query, type SearchPage } from "./fleet";
import { hasRole } from "./ops-api";
import { navigate, onLinkClick, routeTo, useSearch } from "./router";

const colsKey = "strata.devices.columns";
const defaultQuery: Query = { path: "/", type: "device", tenant: "", online: "", filters: "", sort: "" };

const limits = [25, 100, 500];

/** queryOf reads the Devices query and page size from a URL query string;
 * what is absent or unknown is the default. */
export function queryOf(search: string): { q: Query; limit: number } {
  const u = new URLSearchParams(search);
  const online = u.get("online");
  const limit = Number(u.get("limit"));
  return {
    q: {
      path: u.get("path") || defaultQuery.path,
      type: u.get("type") ?? defaultQuery.type,
      tenant: u.get("tenant") ?? "",
      online: online === "true" || online === "false" ? online : "",
      filters: u.get("q") ?? "",
      sort: u.get("sort") ?? "",
    },
    limit: limits.includes(limit) ? limit : 100,
  };
}

/** devicesURL is the route of the Devices screen showing q, limit a page;
 * defaults are left out, so /devices is the default list. */
export function devicesURL(q: Query, limit = 100): string {
  const u = new URLSearchParams();
  const path = q.path.trim();
  if (path && path !== defaultQuery.path) u.set("path", path);
  if (q.type.trim() !== defaultQuery.type) u.set("type", q.type.trim());
  if (q.tenant.trim()) u.set("tenant", q.tenant.trim());
  if (q.online) u.set("online", q.online);
  const words = q.filters.trim().split(/\s+/).filter((w) => w !== "").join(" ");
  if (words) u.set("q", words);
  if (q.sort && q.sort !== "path") u.set("sort", q.sort);
  if (limit !== 100) u.set("limit", String(limit));
  const s = u.toString();
  return s ? `/devices?${s}` : "/devices";
}

function loadCols(): Column[] {
  try {
    const c = JSON.parse(localStorage.getItem(colsKey) ?? "null");
    if (Array.isArray(c)) return c as Column[];
  } catch {
    // A bad saved choice falls back to the default.
  }
  return [{ kind: "var", name: "online" }];
}

export function DevicesScreen() {
  // The query shown is the URL's: a search pushes a new URL, and
  // back/forward bring an earlier one (and its list) back.
  const here = useSearch();
  const { q, limit } = queryOf(here);
  const [draft, setDraft] = useState<Query>(q);
  // after of each page seen, for the URL they were seen at: a new URL
  // starts at its first page.
  const [seen, setSeen] = useState<{ at: string; cursors: string[] }>({ at: here, cursors: [""] });
  const cursors = seen.at === here ? seen.cursors : [""];
  const setCursors = (c: string[]) => setSeen({ at: here, cursors: c });
  useEffect(() => setDraft(queryOf(here).q), [here]);
  // The page shown is the one read for the current query and cursor, never
  // a previous one while the next loads.
  const [loaded, setLoaded] = useState<{ key: string; page: SearchPage | null }>({ key: "", page: null });
  const [error, setError] = useState("");
  const [cols, setCols] = useState<Column[]>(loadCols);
  const [exporting, setExporting] = useState<number | null>(null);
  const [running, setRunning] = useState(false);
  const cancelExport = useRef(false);
  const after = cursors[cursors.length - 1];
  const key = JSON.stringify([q, after, limit]);
  const page = loaded.key === key ? loaded.page : null;

  useEffect(() => {
    let stale = false;
    setError("");
    search(q, after, limit)
      .then((p) => !stale && setLoaded({ key, page: p }))
      .catch((e) => !stale && (setLoaded({ key, page: null }), setError(e instanceof APIError || e instanceof Error ? e.message : String(e))));
    return () => {
      stale = true;
    };
  }, [key]);
  useEffect(() => localStorage.setItem(colsKey, JSON.stringify(cols)), [cols]);
  // The number of matches comes after the page, in its own request: it
  // walks every match, the page only its own.
  const countKey = JSON.stringify({ ...q, sort: "" });
  const [count, setCount] = useState<{ key: string; total: number; capped: boolean } | null>(null);
  useEffect(() => {
    let stale = false;
    countMatches(q)
      .then((c) => !stale && setCount({ key: countKey, ...c }))
      .catch(() => !stale && setCount(null));
    return () => {
      stale = true;
    };
  }, [countKey]);
  const shownCount = count?.key === countKey ? count : null;
  // Clicking a column's header sorts by it, a second click the other way.
  const sortBy = (field: string) => {
    const cur = q.sort || "path";
    const next = cur === field ? "-" + field : field;
    setCursors([""]);
    navigate(devicesURL({ ...q, sort: next === "path" ? "" : next }, limit));
  };
  const arrow = (field: string) => {
    const cur = q.sort || "path";
    return cur === field ? " ▲" : cur === "-" + field ? " ▼" : "";
  };

  const apply = (e: Event) => {
    e.preventDefault();
    setCursors([""]);
    navigate(devicesURL(draft, limit));
  };
  const set = (k: keyof Query) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });

  // Columns to offer: those chosen, and every label and variable of the
  // page shown.
  const offered = new Map<string, Column>();
  for (const c of cols) offered.set(columnKey(c), c);
  for (const c of page?.contexts ?? []) {
    for (const name of Object.keys(c.labels ?? {}).sort()) offered.set(`label.${name}`, { kind: "label", name });
    for (const name of Object.keys(c.variables ?? {}).sort()) offered.set(`var.${name}`, { kind: "var", name });
  }
  const chosen = new Set(cols.map(columnKey));
  const toggle = (c: Column) =>
    setCols(chosen.has(columnKey(c)) ? cols.filter((x) => columnKey(x) !== columnKey(c)) : [...cols, c]);

  const doExport = async () => {
    cancelExport.current = false;
    setExporting(0);
    setError("");
    try {
      const blob = await exportCSV(q, cols, setExporting, () => cancelExport.current);
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = "devices.csv";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setExporting(null);
    }
  };

  // A bulk job's target filter is the list's search parameters, less
  // those of paging and order.
  let runFilter: Record<string, string> | null = null;
  try {
    const p = searchParams(q, "", 1);
    for (const k of ["limit", "sort", "after"]) p.delete(k);
    runFilter = Object.fromEntries(p);
  } catch {
    // A malformed filter: the list shows its error, nothing to run on.
  }
  const canRun = runFilter !== null && hasRole(session()?.user, "operator", q.path.trim() || "/");

  return (
    <section class="devices-screen">
      <form class="filters" data-test="device-filters" onSubmit={apply}>
        <label class="field">
          subtree
          <input name="path" value={draft.path} onInput={set("path")} />
        </label>
        <label class="field">
          type
          <input name="type" value={draft.type} onInput={set("type")} size={8} />
        </label>
        <label class="field">
          tenant
          <input name="tenant" value={draft.tenant} onInput={set("tenant")} size={8} />
        </label>
        <label class="field">
          online
          <select name="online" value={draft.online} onChange={set("online")}>
            <option value="">any</option>
            <option value="true">online</option>
            <option value="false">offline</option>
          </select>
        </label>
        <label class="field grow">
          labels and variables (site=lyon var.os=linux)
          <input name="filters" value={draft.filters} onInput={set("filters")} />
        </label>
        <button type="submit" data-test="search">
          Search
        </button>
      </form>
      <details class="columns">
        <summary>columns</summary>
        {[...offered.values()].map((c) => (
          <label key={columnKey(c)} class="col-choice">
            <input
              type="checkbox"
              name={`col-${columnKey(c)}`}
              checked={chosen.has(columnKey(c))}
              onChange={() => toggle(c)}
            />
            {columnKey(c)}
          </label>
        ))}
      </details>
      {error && (
        <p class="error" role="alert" data-test="devices-error">
          {error}
        </p>
      )}
      <div class="pager">
        <button type="button" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>
          ‹ previous
        </button>
        <span class="muted" data-test="page-info">
          page {cursors.length}
          {page ? `: ${page.contexts.length} shown` : ""}
        </span>
        <span class="muted" data-test="match-count">
          {shownCount ? `${shownCount.total.toLocaleString()}${shownCount.capped ? "+" : ""} matching` : ""}
        </span>
        <button
          type="button"
          data-test="next-page"
          disabled={!page?.next}
          onClick={() => page?.next && setCursors([...cursors, page.next])}
        >
          next ›
        </button>
        <select value={String(limit)} onChange={(e) => navigate(devicesURL(q, Number((e.target as HTMLSelectElement).value)))}>
          {limits.map((n) => (
            <option value={String(n)}>{n} per page</option>
          ))}
        </select>
        {canRun && !running && (
          <button type="button" data-test="run-on-devices" onClick={() => setRunning(true)}>
            Run on these devices
          </button>
        )}
        {exporting === null ? (
          <button type="button" data-test="export-csv" onClick={doExport}>
            Export CSV
          </button>
        ) : (
          <span data-test="exporting">
            exporting… {exporting} rows{" "}
            <button type="button" class="link" onClick={() => (cancelExport.current = true)}>
              cancel
            </button>
          </span>
        )}
      </div>
      {canRun && running && runFilter && <RunOnDevices filter={runFilter} onClose={() => setRunning(false)} />}
      <table class="vars devices" data-test="device-list">
        <thead>
          <tr>
            <th class="sortable" data-sort="path" onClick={() => sortBy("path")}>
              path{arrow("path")}
            </th>
            <th class="sortable" data-sort="tenant" onClick={() => sortBy("tenant")}>
              tenant{arrow("tenant")}
            </th>
            {cols.map((c) => (
              <th key={columnKey(c)} class="sortable" data-sort={columnKey(c)} onClick={() => sortBy(columnKey(c))}>
                {columnKey(c)}
                {arrow(columnKey(c))}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {page?.contexts.map((c) => {
            const to = c.type === "device" ? routeTo("/device", c.path) : routeTo("/tree", c.path);
            return (
              <tr key={c.path} data-path={c.path}>
                <td>
                  <a href={to} onClick={onLinkClick(to)}>
                    {c.path}
                  </a>
                </td>
                <td>{c.tenant ?? ""}</td>
                {cols.map((col) => (
                  <td key={columnKey(col)} data-col={columnKey(col)}>
                    {cell(c, col)}
                  </td>
                ))}
              </tr>
            );
          })}
        </tbody>
      </table>
      {page?.contexts.length === 0 && <p class="muted">no match</p>}
    </section>
  );
}
