// The fleet-wide reads of the Devices and Overview screens: search (paged
// by its keyset cursor, filtered on the node), links and jobs. Nothing
// here loads a whole fleet: every call is one page.

import { request, type Context, type Job } from "./api";

/** Query is a search as the Devices screen builds it. */
export interface Query {
  path: string; // subtree, "/" by default
  type: string;
  tenant: string;
  online: "" | "true" | "false"; // the variable online, set by the node on (dis)connect
  filters: string; // "site=lyon var.os=linux label.line=2": labels by default
  sort?: string; // "" or absent (path order), or the API's sort: "-var.cpus", "label.site", "name"...
}

export interface SearchPage {
  contexts: Context[];
  next: string;
  total?: number;
  total_capped?: boolean;
}

/** searchParams turns q into /api/v1/search parameters, or throws on a
 * filter that is not key=value. */
export function searchParams(q: Query, after: string, limit: number): URLSearchParams {
  const p = new URLSearchParams({ path: q.path.trim() || "/", limit: String(limit) });
  if (q.type.trim()) p.set("type", q.type.trim());
  if (q.tenant.trim()) p.set("tenant", q.tenant.trim());
  if (q.online) p.set("var.online", q.online);
  for (const tok of q.filters.split(/\s+/).filter((s) => s !== "")) {
    const eq = tok.indexOf("=");
    if (eq <= 0) throw new Error(`filter ${JSON.stringify(tok)}: want key=value (a label) or var.name=value`);
    let key = tok.slice(0, eq);
    if (!key.startsWith("label.") && !key.startsWith("var.")) key = "label." + key;
    if (p.has(key)) throw new Error(`filter ${key} given twice`);
    p.set(key, tok.slice(eq + 1));
  }
  if (q.sort && q.sort !== "path") p.set("sort", q.sort);
  if (after) p.set("after", after);
  return p;
}

export async function search(q: Query, after = "", limit = 100): Promise<SearchPage> {
  return request<SearchPage>("GET", `/api/v1/search?${searchParams(q, after, limit)}`);
}

/** countMatches counts what q matches on the node (count=true), without
 * its order, which counting does not need. */
export async function countMatches(q: Query): Promise<{ total: number; capped: boolean }> {
  const p = searchParams({ ...q, sort: "" }, "", 1);
  p.set("count", "true");
  const page = await request<SearchPage>("GET", `/api/v1/search?${p}`);
  return { total: page.total ?? 0, capped: page.total_capped ?? false };
}

/** Column is a label or a variable shown as a column (and exported). */
export interface Column {
  kind: "label" | "var";
  name: string;
}

export const columnKey = (c: Column) => `${c.kind}.${c.name}`;

export function cell(ctx: Context, c: Column): string {
  if (c.kind === "label") return ctx.labels?.[c.name] ?? "";
  const v = ctx.variables?.[c.name];
  if (!v || v.value === undefined || v.value === null) return "";
  return typeof v.value === "string" ? v.value : JSON.stringify(v.value);
}

// A field a spreadsheet would run as a formula (=, +, @, a tab, or - not
// starting a number) gets a leading ' ; fields with a quote, comma or line
// break are quoted.
function csvField(s: string): string {
  if (/^[=+@\t\r]/.test(s) || /^-(?![0-9.])/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvRow(fields: string[]): string {
  return fields.map(csvField).join(",") + "\r\n";
}

/** exportCSV reads every page of q (1000 at a time, one after another) and
 * returns the CSV as a Blob: path, type, tenant and the columns, in path
 * order whatever the screen's sort (a sorted page costs a walk of every
 * match on the node; path order costs its page). */
export async function exportCSV(
  q: Query,
  cols: Column[],
  progress: (rows: number) => void,
  cancelled: () => boolean,
): Promise<Blob> {
  const parts: string[] = [csvRow(["path", "type", "tenant", ...cols.map(columnKey)])];
  let after = "";
  let rows = 0;
  for (;;) {
    if (cancelled()) throw new Error("export cancelled");
    const page = await search({ ...q, sort: "" }, after, 1000);
    let chunk = "";
    for (const c of page.contexts) chunk += csvRow([c.path, c.type, c.tenant ?? "", ...cols.map((col) => cell(c, col))]);
    parts.push(chunk);
    rows += page.contexts.length;
    progress(rows);
    if (!page.next) break;
    after = page.next;
  }
  return new Blob(parts, { type: "text/csv;charset=utf-8" });
}

export interface Peer {
  name: string;
  direction: "provider" | "consumer";
  role?: string;
  address?: string;
  state: string;
  mount?: string;
  lag_entries?: number;
  lag_seconds?: number;
  gaps?: number;
  rtt_ms?: number;
  since?: string;
  last_error?: string;
  last_error_time?: string;
}

export function getPeers(): Promise<{ peers: Peer[] }> {
  return request("GET", "/api/v1/peers");
}

export function listJobs(state: string, limit = 20): Promise<{ jobs: Job[]; next?: string }> {
  return request("GET", `/api/v1/jobs?${new URLSearchParams({ state, limit: String(limit) })}`);
}

/** FeedEvent is one event of the event feed (GET /api/v1/events). */
export interface FeedEvent {
  seq: number;
  path: string;
  name?: string;
  level: "warning" | "alert" | "info";
  payload?: unknown;
  time: string;
  tenant?: string;
}

/** getFeed reads one page of the warnings and alerts of a subtree, newest
 * first; pass next as before for the following page. */
export function getFeed(
  path: string,
  level: "warning" | "alert",
  limit: number,
  before?: number,
): Promise<{ events: FeedEvent[]; next?: number }> {
  const q = new URLSearchParams({ path, level, limit: String(limit) });
  if (before) q.set("before", String(before));
  return request("GET", `/api/v1/events?${q}`);
}

/** NodeBelow is a node mounted, directly or not, below this one: the root
 * context of its mount (type peer, labelled with its role). */
export interface NodeBelow {
  name: string;
  mount: string; // /peers/eu/peers/probe-a
  role: string; // "" when it told none
  tier: number; // 1: a provider of this node, 2: a provider of one, ...
  via: string; // the provider of this node it is reached through
}

export function nodeOf(c: Context): NodeBelow {
  const segs = c.path.split("/").filter((s) => s !== "");
  const names: string[] = [];
  for (let i = 0; i + 1 < segs.length; i += 2) if (segs[i] === "peers") names.push(segs[i + 1]);
  return {
    name: names[names.length - 1] ?? c.path,
    mount: c.path,
    role: c.labels?.role ?? "",
    tier: names.length,
    via: names[0] ?? "",
  };
}

/** nodesBelow lists the nodes below this one, from the peer contexts under
 * /peers (at most max of them), in path order. */
export async function nodesBelow(max = 1000): Promise<{ nodes: NodeBelow[]; more: boolean }> {
  const q: Query = { path: "/peers", type: "peer", tenant: "", online: "", filters: "" };
  const nodes: NodeBelow[] = [];
  let after = "";
  for (;;) {
    const page = await search(q, after, 1000);
    for (const c of page.contexts) nodes.push(nodeOf(c));
    if (!page.next) return { nodes, more: false };
    if (nodes.length >= max) return { nodes, more: true };
    after = page.next;
  }
}
