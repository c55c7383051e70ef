// The console's only way to the node: the public API, with the session's
// bearer token. A 401 on any call ends the session (back to the login
// screen), as the API's own expiry and revocation dictate.

export interface Grant {
  role: "admin" | "operator" | "viewer";
  subtree: string;
}

export interface User {
  name: string;
  tenant?: string;
  system?: boolean;
  grants?: Grant[];
}

export interface Session {
  token: string;
  id: string;
  expires: string;
  user: User;
}

export interface Variable {
  value: unknown;
  type?: string;
  time?: string;
  quality?: string;
}

export interface FunctionSpec {
  name: string;
  description?: string;
  args?: JSONSchema;
  result?: JSONSchema;
}

export interface JSONSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JSONSchema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
}

export interface Context {
  path: string;
  type: string;
  tenant?: string;
  labels: Record<string, string>;
  variables: Record<string, Variable>;
  functions: FunctionSpec[];
  created?: string;
  updated?: string;
  version?: number;
}

export interface TreeNode {
  name?: string;
  path: string;
  type: string;
  tenant?: string;
  children?: TreeNode[];
  next?: string;
  truncated?: boolean;
}

export interface JobTransition {
  state: string;
  time: string;
  detail?: string;
}

export interface Job {
  id: string;
  job?: string;
  node?: string;
  path: string;
  function?: string;
  state: string;
  result?: unknown;
  error?: string;
  history?: JobTransition[];
}

export const finalStates = new Set(["succeeded", "failed", "expired", "cancelled"]);

export class APIError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const storageKey = "strata.session";
type Listener = (s: Session | null) => void;
const listeners = new Set<Listener>();
let current: Session | null = load();

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(storageKey);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    if (!s.token || Date.parse(s.expires) <= Date.now()) {
      sessionStorage.removeItem(storageKey);
      return null;
    }
    return s;
  } catch {
    return null;
  }
}

function setSession(s: Session | null) {
  current = s;
  if (s) sessionStorage.setItem(storageKey, JSON.stringify(s));
  else sessionStorage.removeItem(storageKey);
  for (const l of listeners) l(s);
}

export function session(): Session | null {
  return current;
}

export function onSession(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

/** endSession forgets the session locally (the token expired or was revoked). */
export function endSession() {
  if (current) setSession(null);
}

export async function login(username: string, password: string): Promise<Session> {
  const s = await request<Session>("POST", "/api/v1/login", { username, password }, false);
  setSession(s);
  return s;
}

/** logout revokes the session's token on the node, then forgets it. */
export async function logout() {
  const s = current;
  if (!s) return;
  try {
    await request("DELETE", `/api/v1/tokens/${encodeURIComponent(s.id)}`);
  } catch {
    // Expired or revoked already: nothing more to revoke.
  }
  setSession(null);
}

/** authHeaders are the headers of an authenticated request. */
export function authHeaders(): Record<string, string> {
  return current ? { Authorization: `Bearer ${current.token}` } : {};
}

export async function request<T = unknown>(method: string, url: string, body?: unknown, authed = true): Promise<T> {
  const headers: Record<string, string> = authed ? authHeaders() : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (res.status === 401 && authed) endSession();
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // A non-JSON answer is reported below.
  }
  if (!res.ok) {
    const e = (data ?? {}) as { error?: string; code?: string };
    throw new APIError(res.status, e.code ?? "http", e.error ?? `${res.status} ${res.statusText}`);
  }
  return data as T;
}

/** encodePath turns a context path into the URL path after a route prefix. */
export function encodePath(p: string): string {
  return p
    .split("/")
    .filter((s) => s !== "")
    .map(encodeURIComponent)
    .join("/");
}

export function getContext(p: string): Promise<Context> {
  return request<Context>("GET", `/api/v1/contexts/${encodePath(p)}`);
}

export function getTree(p: string, after?: string, limit = 200): Promise<TreeNode> {
  const q = new URLSearchParams({ path: p, depth: "1", limit: String(limit) });
  if (after) q.set("after", after);
  return request<TreeNode>("GET", `/api/v1/tree?${q}`);
}

/** callFunction creates a job, waiting up to wait for it to end. */
export function callFunction(p: string, name: string, args: Record<string, unknown>, wait = "20s"): Promise<Job> {
  return request<Job>("POST", `/api/v1/contexts/${encodePath(p)}/functions/${encodeURIComponent(name)}`, { args, wait });
}

export function getJob(id: string, node?: string): Promise<Job> {
  const q = node ? `?${new URLSearchParams({ node })}` : "";
  return request<Job>("GET", `/api/v1/jobs/${encodeURIComponent(id)}${q}`);
}

/** canOperate says whether the user's grants allow calling functions at p;
 * the node decides, this only hides what it would refuse. */
export function canOperate(u: User | undefined, p: string): boolean {
  if (!u) return false;
  if (u.system) return true;
  return (u.grants ?? []).some(
    (g) =>
      (g.role === "operator" || g.role === "admin") &&
      (g.subtree === "/" || p === g.subtree || p.startsWith(g.subtree + "/")),
  );
}
