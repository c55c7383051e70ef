// The API calls and types of the operations screens (jobs, links, users,
// tokens, enrollment tokens, audit), all on the public API. Roles only
// decide what a screen shows; the node decides what is allowed.

import { encodePath, request, type Grant, type Job, type User } from "./api";

export interface JobFull extends Job {
  device?: string;
  tenant?: string;
  args?: unknown;
  created_by?: string;
  created?: string;
  deadline?: string;
  updated?: string;
}

export interface JobPage {
  jobs: JobFull[];
  next?: string;
}

export interface JobFilter {
  path?: string;
  device?: string;
  state?: string;
  limit?: number;
  before?: string;
}

export function listJobs(f: JobFilter): Promise<JobPage> {
  const q = new URLSearchParams();
  if (f.path) q.set("path", f.path);
  if (f.device) q.set("device", f.device);
  if (f.state) q.set("state", f.state);
  if (f.limit) q.set("limit", String(f.limit));
  if (f.before) q.set("before", f.before);
  return request<JobPage>("GET", `/api/v1/jobs?${q}`);
}

export function getJobFull(id: string, node?: string): Promise<JobFull> {
  const q = node ? `?${new URLSearchParams({ node })}` : "";
  return request<JobFull>("GET", `/api/v1/jobs/${encodeURIComponent(id)}${q}`);
}

export function cancelJob(id: string): Promise<JobFull> {
  return request<JobFull>("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
}

export interface Peer {
  name: string;
  direction: "provider" | "consumer";
  address?: string;
  state: string;
  grant?: string;
  subtrees?: string[];
  mount?: string;
  cursor: number;
  head: number;
  lag_entries: number;
  lag_seconds: number;
  gaps: number;
  rtt_ms: number;
  bytes_sent: number;
  bytes_received: number;
  since?: string;
  last_error?: string;
  last_error_time?: string;
  previous_error?: string;
  previous_error_time?: string;
  rejected_entries?: number;
  cert_expires?: string;
  below?: string[];
}

export interface MountCheck {
  peer: string;
  mount: string;
  match: boolean;
  seq: number;
  contexts: number;
  digest?: string;
  source?: string;
  error?: string;
}

export function listPeers(): Promise<{ peers: Peer[] }> {
  return request("GET", "/api/v1/peers");
}

export function verifyFederation(): Promise<{ mounts: MountCheck[] }> {
  return request("POST", "/api/v1/federation/verify");
}

export interface UserRecord extends User {
  disabled?: boolean;
  created?: string;
}

export function listUsers(): Promise<{ users: UserRecord[] }> {
  return request("GET", "/api/v1/users");
}

export function createUser(u: { name: string; password: string; tenant?: string; system?: boolean; grants: Grant[] }): Promise<UserRecord> {
  return request("POST", "/api/v1/users", u);
}

export function updateUser(name: string, patch: { password?: string; grants?: Grant[]; disabled?: boolean }): Promise<UserRecord> {
  return request("PATCH", `/api/v1/users/${encodeURIComponent(name)}`, patch);
}

export function deleteUser(name: string): Promise<void> {
  return request("DELETE", `/api/v1/users/${encodeURIComponent(name)}`);
}

export interface APIToken {
  id: string;
  user: string;
  name?: string;
  created?: string;
  expires?: string;
  revoked?: boolean;
}

export function listTokens(user?: string): Promise<{ tokens: APIToken[] }> {
  const q = user ? `?${new URLSearchParams({ user })}` : "";
  return request("GET", `/api/v1/tokens${q}`);
}

export function createToken(t: { user?: string; name: string; ttl?: string }): Promise<APIToken & { token: string }> {
  return request("POST", "/api/v1/tokens", t);
}

export function revokeToken(id: string): Promise<void> {
  return request("DELETE", `/api/v1/tokens/${encodeURIComponent(id)}`);
}

export interface EnrollToken {
  id: string;
  group: string;
  tenant?: string;
  created?: string;
  created_by?: string;
  expires?: string;
  uses: number;
  used: number;
  revoked?: boolean;
}

export function listEnrollTokens(): Promise<{ tokens: EnrollToken[] }> {
  return request("GET", "/api/v1/enrollment-tokens");
}

export function createEnrollToken(t: { group: string; tenant?: string; ttl?: string; uses?: number }): Promise<EnrollToken & { token: string }> {
  return request("POST", "/api/v1/enrollment-tokens", t);
}

export function revokeEnrollToken(id: string): Promise<void> {
  return request("DELETE", `/api/v1/enrollment-tokens/${encodeURIComponent(id)}`);
}

export interface AuditRecord {
  id?: string;
  time: string;
  consumer?: string;
  user?: string;
  tenant?: string;
  system?: boolean;
  via?: string[];
  op: string;
  path?: string;
  function?: string;
  target?: string;
  job?: string;
  node?: string;
  outcome: string;
  error?: string;
  updated?: string;
  request_id?: string;
}

export function listAudit(limit: number): Promise<{ records: AuditRecord[] }> {
  return request("GET", `/api/v1/audit?limit=${limit}`);
}

const rank = { viewer: 1, operator: 2, admin: 3 } as const;

/** hasRole says whether u holds role (or a higher one) on p. */
export function hasRole(u: User | undefined, role: Grant["role"], p: string): boolean {
  if (!u) return false;
  if (u.system) return true;
  return (u.grants ?? []).some(
    (g) => rank[g.role] >= rank[role] && (g.subtree === "/" || p === g.subtree || p.startsWith(g.subtree + "/")),
  );
}

/** message turns a failure into the text a screen shows. */
export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function fmtTime(t?: string): string {
  if (!t || t.startsWith("0001-")) return "";
  const d = new Date(t);
  return isNaN(d.getTime()) ? t : d.toLocaleString();
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${u[i]}`;
}

export { encodePath };

// Bulk jobs (docs/jobs.md): one function on many devices, here and below.

export interface BulkCounters {
  total: number;
  pending?: number;
  queued: number;
  delivered: number;
  running: number;
  succeeded: number;
  failed: number;
  expired: number;
  cancelled: number;
  /** verifying: job succeeded, the rollout's health gate not decided yet
   * (absent from nodes that have no health gate). */
  verifying?: number;
}

export interface BulkTarget {
  paths?: string[];
  subtree?: string;
  labels?: Record<string, string>;
  filter?: Record<string, string>;
}

export interface BulkJobSummary {
  id: string;
  bulk: true;
  function: string;
  tenant?: string;
  state: string;
  reason?: string;
  counters: BulkCounters;
  created?: string;
  created_by?: string;
  origin?: string;
}

export interface BulkPeer extends BulkCounters {
  state: string;
  reason?: string;
  error?: string;
  attempt?: number;
}

export interface BulkWave {
  size: number;
  state: string;
  counters: BulkCounters;
}

export interface BulkJob extends BulkJobSummary {
  args?: unknown;
  target: BulkTarget;
  rollout?: unknown;
  deadline?: string;
  attempt?: number;
  local: BulkPeer;
  peers: Record<string, BulkPeer>;
  waves: BulkWave[];
}

export interface BulkFailure {
  node: string;
  path: string;
  device?: string;
  job?: string;
  state: string;
  error?: string;
  time: string;
}

/** isBulkID tells a bulk job's id ("b" and 20 characters) from a device job's. */
export function isBulkID(id: string): boolean {
  return /^b[0-9a-v]{20}$/.test(id);
}

/** finished counts the devices of c that are done with the job. */
export function finished(c: BulkCounters): number {
  return c.succeeded + c.failed + c.expired + c.cancelled;
}

export function listBulkJobs(before?: string, limit?: number): Promise<{ jobs: BulkJobSummary[]; next?: string }> {
  const q = new URLSearchParams({ bulk: "true" });
  if (limit) q.set("limit", String(limit));
  if (before) q.set("before", before);
  return request("GET", `/api/v1/jobs?${q}`);
}

export function getBulkJob(id: string): Promise<BulkJob> {
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
}

export function bulkAction(id: string, action: "pause" | "resume" | "cancel" | "retry"): Promise<BulkJob> {
  return request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/${action}`);
}

export function bulkFailures(id: string, after: string, limit: number): Promise<{ failures: BulkFailure[]; next?: string }> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (after) q.set("after", after);
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/failures?${q}`);
}

export function createBulkJob(b: { function: string; args?: unknown; target: BulkTarget; rollout?: unknown; ttl?: string; deadline?: string }): Promise<BulkJob> {
  return request("POST", "/api/v1/jobs", b);
}

/** canOperateBulk says whether u holds the operator role on what target
 * selects (the node checks it again). */
export function canOperateBulk(u: User | undefined, t: BulkTarget): boolean {
  const at = [...(t.paths ?? []), t.subtree ?? t.filter?.path ?? (t.paths?.length ? undefined : "/")].filter(
    (p): p is string => !!p,
  );
  return at.every((p) => hasRole(u, "operator", p));
}
