// The API calls and types of the software screens (docs/software.md):
// releases and their artifacts (/api/v1/releases), the cache of each tier
// (/api/v1/software/cache) and the bulk job that installs a release on
// devices (POST /api/v1/jobs with the function install). Roles only
// decide what a screen shows; the node decides what is allowed.

import { APIError, authHeaders, request } from "./api";

export interface ReleaseArtifact {
  os: string;
  arch: string;
  type: string;
  size: number;
  sha256: string;
  /** stored: the node holds all of the artifact's bytes, verified. */
  stored: boolean;
  /** uploaded: the bytes received so far while not stored. */
  uploaded: number;
}

export interface Release {
  name: string;
  version: string;
  /** tenant: "" for a shared release (a system user's). */
  tenant: string;
  artifacts: ReleaseArtifact[];
  created: string;
  expires: string;
  expired: boolean;
  key_id: string;
  by: string;
  updated: string;
}

/** ReleaseRef names a release as the API addresses it: a system user
 * names a tenant's release with tenant; a tenant user's requests always
 * mean its own tenant's release, else a shared one. */
export interface ReleaseRef {
  name: string;
  version: string;
  tenant?: string;
}

const seg = encodeURIComponent;

function releaseURL(r: ReleaseRef, rest = ""): string {
  const q = r.tenant ? `?${new URLSearchParams({ tenant: r.tenant })}` : "";
  return `/api/v1/releases/${seg(r.name)}/${seg(r.version)}${rest}${q}`;
}

/** releaseRoute is the console's route of a release's detail. */
export function releaseRoute(r: ReleaseRef): string {
  const q = r.tenant ? `?${new URLSearchParams({ tenant: r.tenant })}` : "";
  return `/releases/${seg(r.name)}/${seg(r.version)}${q}`;
}

/** releaseOfRoute reads a release detail's route (after "/releases/")
 * and its query string; null when it names none. */
export function releaseOfRoute(rest: string, search: string): ReleaseRef | null {
  const parts = rest.split("/");
  if (parts.length !== 2 || !parts[0] || !parts[1]) return null;
  try {
    const tenant = new URLSearchParams(search).get("tenant") ?? "";
    return { name: decodeURIComponent(parts[0]), version: decodeURIComponent(parts[1]), tenant: tenant || undefined };
  } catch {
    return null;
  }
}

/** listReleases lists every release the user may see (the API does not
 * page them: a node holds a handful), newest first by creation. */
export async function listReleases(): Promise<Release[]> {
  const r = await request<{ releases: Release[] }>("GET", "/api/v1/releases");
  return (r.releases ?? []).sort(
    (a, b) => Date.parse(b.created) - Date.parse(a.created) || a.name.localeCompare(b.name) || a.version.localeCompare(b.version),
  );
}

export function getRelease(r: ReleaseRef): Promise<Release> {
  return request<Release>("GET", releaseURL(r));
}

export function deleteRelease(r: ReleaseRef): Promise<void> {
  return request("DELETE", releaseURL(r));
}

/** refOf is the reference that names rel for any user. */
export function refOf(rel: Release): ReleaseRef {
  return { name: rel.name, version: rel.version, tenant: rel.tenant || undefined };
}

/** artifactFileName is the name a downloaded artifact is saved under. */
export function artifactFileName(rel: Release, a: ReleaseArtifact): string {
  const ext: Record<string, string> = { deb: ".deb", rpm: ".rpm", tar: ".tar", script: ".sh" };
  return `${rel.name}_${rel.version}_${a.os}_${a.arch}${ext[a.type] ?? ""}`.replace(/[^A-Za-z0-9._+~-]/g, "_");
}

/** Largest artifact whose SHA-256 the browser checks before saving it
 * (the digest needs the whole file in memory). */
export const verifyLimit = 512 << 20;

/** downloadArtifact reads an artifact with the operator download route
 * (the session's token in a header, never in a URL, so not a plain
 * link), reporting the bytes received, checks its SHA-256 when it is not
 * larger than verifyLimit, and returns it as a Blob to save. */
export async function downloadArtifact(
  rel: Release,
  a: ReleaseArtifact,
  progress: (bytes: number) => void,
  signal: AbortSignal,
): Promise<{ blob: Blob; verified: boolean }> {
  const res = await fetch(releaseURL(refOf(rel), `/artifacts/${seg(a.sha256)}`), {
    headers: authHeaders(),
    cache: "no-store",
    signal,
  });
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      msg = ((await res.json()) as { error?: string }).error ?? msg;
    } catch {
      // Not JSON: the status says it.
    }
    throw new APIError(res.status, "http", msg);
  }
  const parts: Uint8Array[] = [];
  let got = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    progress(got);
  }
  if (got !== a.size) throw new Error(`received ${got} bytes, the manifest says ${a.size}`);
  const blob = new Blob(parts as BlobPart[], { type: "application/octet-stream" });
  if (a.size > verifyLimit) return { blob, verified: false };
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
  const hex = Array.from(sum, (b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== a.sha256) throw new Error(`SHA-256 ${hex} is not the manifest's ${a.sha256}: not saved`);
  return { blob, verified: true };
}

/** saveBlob offers blob to the browser as a download named name. */
export function saveBlob(blob: Blob, name: string) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** CacheTier is one tier's artifact cache as GET /api/v1/software/cache
 * reports it (apitypes.CacheTier): budget_bytes 0 is no limit; the
 * origin figures are the artifacts uploaded to that node (never
 * evicted); error says why a node below did not answer. */
export interface CacheTier {
  node: string;
  path: string;
  role?: string;
  budget_bytes: number;
  used_bytes: number;
  objects: number;
  pinned: number;
  fetching?: number;
  fetched_bytes: number;
  served_bytes: number;
  origin_objects?: number;
  origin_bytes?: number;
  updated?: string;
  error?: string;
}

export function getCache(): Promise<{ tiers: CacheTier[] }> {
  return request("GET", "/api/v1/software/cache");
}

/** InstallArgs are the arguments of the function install as an operator
 * sends them: the release by name and version (a system user names a
 * tenant's release with tenant; without it, a shared one). The node
 * replaces the name by the release's signed manifest, which devices and
 * the tiers below get and check. */
export interface InstallArgs {
  release: string;
  version: string;
  tenant?: string;
  downgrade: boolean;
  check?: string;
}

/** installOf reads what a bulk job installs from its function and
 * arguments: as sent (release and version by name) or as the node keeps
 * them (release: the signed manifest). null when it installs nothing. */
export function installOf(fn: string, args: unknown): InstallArgs | null {
  if (fn !== "install" || args === null || typeof args !== "object") return null;
  const a = args as Record<string, unknown>;
  let release: string | undefined;
  let version: string | undefined;
  if (typeof a.release === "string" && typeof a.version === "string") {
    release = a.release;
    version = a.version;
  } else if (a.release !== null && typeof a.release === "object") {
    let m = (a.release as { manifest?: unknown }).manifest;
    if (typeof m === "string") {
      try {
        m = JSON.parse(m);
      } catch {
        m = undefined;
      }
    }
    if (m !== null && typeof m === "object") {
      const mf = m as { name?: unknown; version?: unknown };
      if (typeof mf.name === "string" && typeof mf.version === "string") {
        release = mf.name;
        version = mf.version;
      }
    }
  }
  if (release === undefined || version === undefined) return null;
  return {
    release,
    version,
    tenant: typeof a.tenant === "string" && a.tenant ? a.tenant : undefined,
    downgrade: a.downgrade === true,
    check: typeof a.check === "string" ? a.check : undefined,
  };
}

/** stageRelease sends a release to the nodes below named by their mount
 * paths, which keep it and fetch its artifacts now, whatever their cache
 * budget (system users with the operator role on /peers). */
export function stageRelease(r: ReleaseRef, peers: string[]): Promise<{ staged: { peer: string; error?: string }[] }> {
  return request("POST", releaseURL(r, "/stage"), { peers });
}
