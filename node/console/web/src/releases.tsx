// The Software screens: the releases the user may see (GET
// /api/v1/releases, newest first), one release with its artifacts
// (download for viewers, delete and "Start a rollout" for operators), and
// the cache of each tier (cache.tsx). Releases are created and uploaded
// with `strata ctl artifacts upload`: the signing key stays with the
// operator, never in the browser.

import { useEffect, useRef, useState } from "preact/hooks";
import { session } from "./api";
import { CacheScreen } from "./cache";
import { fmtBytes, fmtTime, hasRole, message } from "./ops-api";
import { StatusRow } from "./pager";
import { RolloutForm } from "./rollout";
import { StageForm } from "./stage";
import { navigate, onLinkClick } from "./router";
import {
  artifactFileName,
  deleteRelease,
  downloadArtifact,
  getRelease,
  listReleases,
  refOf,
  releaseOfRoute,
  releaseRoute,
  saveBlob,
  verifyLimit,
  type Release,
  type ReleaseArtifact,
  type ReleaseRef,
} from "./software-api";

/** softwareScreen is the screen of a Software route, or null. */
export function softwareScreen(loc: string) {
  if (loc === "/releases" || loc === "/cache") return <SoftwareScreen loc={loc} />;
  if (loc.startsWith("/releases/")) {
    const ref = releaseOfRoute(loc.slice("/releases/".length), location.search);
    if (ref) return <ReleaseScreen key={releaseRoute(ref)} r={ref} />;
  }
  return null;
}

function SoftwareScreen({ loc }: { loc: string }) {
  const tabs: [string, string][] = [["/releases", "Releases"]];
  // The node shows the cache of each tier to system users.
  if (session()?.user.system) tabs.push(["/cache", "Cache per tier"]);
  return (
    <section class="ops software">
      <nav class="tabs">
        {tabs.map(([to, label]) => (
          <a key={to} href={to} class={loc === to ? "active" : ""} onClick={onLinkClick(to)} data-test={`tab-${to.slice(1)}`}>
            {label}
          </a>
        ))}
      </nav>
      {loc === "/releases" ? <ReleasesList /> : <CacheScreen />}
    </section>
  );
}

/** TenantBadge says whose a release is: a tenant's or shared. */
function TenantBadge({ tenant }: { tenant: string }) {
  return tenant ? <span class="badge tenant">{tenant}</span> : <span class="badge shared">shared</span>;
}

function ReleasesList() {
  const [rels, setRels] = useState<Release[] | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    listReleases().then(
      (r) => live && (setRels(r), setError("")),
      (e) => live && (setError(message(e)), setRels([])),
    );
    return () => {
      live = false;
    };
  }, []);
  return (
    <>
      <h1>Releases</h1>
      {error && (
        <p class="error" role="alert" data-test="releases-error">
          {error}
        </p>
      )}
      <table class="grid" data-test="releases">
        <thead>
          <tr>
            <th>release</th>
            <th>version</th>
            <th>tenant</th>
            <th>artifacts</th>
            <th>created</th>
            <th>expires</th>
          </tr>
        </thead>
        <tbody>
          {rels === null && <StatusRow cols={6} text="loading…" />}
          {rels?.length === 0 && !error && <StatusRow cols={6} text="no releases" />}
          {rels?.map((r) => {
            const to = releaseRoute(refOf(r));
            const stored = r.artifacts.filter((a) => a.stored).length;
            return (
              <tr key={to} data-release={`${r.tenant}/${r.name}/${r.version}`}>
                <td>
                  <a href={to} onClick={onLinkClick(to)}>
                    {r.name}
                  </a>
                </td>
                <td class="mono">{r.version}</td>
                <td>
                  <TenantBadge tenant={r.tenant} />
                </td>
                <td data-test="artifact-count" title={`${stored} of ${r.artifacts.length} uploaded`}>
                  {r.artifacts.length}
                  {stored < r.artifacts.length && <span class="muted"> ({stored} uploaded)</span>}
                </td>
                <td>{fmtTime(r.created)}</td>
                <td class={r.expired ? "error" : ""}>
                  {fmtTime(r.expires)}
                  {r.expired && " (expired)"}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <UploadHelp />
    </>
  );
}

/** UploadHelp shows how releases are made: on the operator's machine,
 * where the signing key is. */
function UploadHelp({ rel, canChange }: { rel?: Release; canChange?: boolean }) {
  const name = rel?.name ?? "NAME";
  const version = rel?.version ?? "VERSION";
  return (
    <div class="help" data-test="upload-help">
      <h2>{rel ? "Add a platform" : "Publish a release"}</h2>
      <p class="muted">
        Releases are signed and uploaded from the command line, where the signing key is; the key never reaches the
        node or this console ({rel ? "the manifest is fetched, the artifact added, then signed again" : "see docs/software.md"}).
        {rel && !canChange && " It takes the operator role on / in the release's tenant (a system user's for a shared release)."}
      </p>
      <pre class="mono">
        strata ctl artifacts upload FILE --release {name} --version {version} --os linux --arch arm64 --type deb --key release.key
      </pre>
    </div>
  );
}

/** ReleaseScreen shows one release: its signature, who sent it, its
 * artifacts with a download each, and for operators delete and a rollout
 * form. */
function ReleaseScreen({ r }: { r: ReleaseRef }) {
  const [rel, setRel] = useState<Release | null>(null);
  const [error, setError] = useState("");
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [rolling, setRolling] = useState(false);
  const [staging, setStaging] = useState(false);
  useEffect(() => {
    let live = true;
    getRelease(r).then(
      (x) => live && (setRel(x), setError("")),
      (e) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [r.name, r.version, r.tenant]);
  const u = session()?.user;
  // The node's rules: operator on / changes releases, a tenant user only
  // its tenant's; a rollout needs operator on what it targets, checked
  // again in the form and by the node.
  const canDelete = !!rel && hasRole(u, "operator", "/") && (!!u?.system || rel.tenant === (u?.tenant ?? ""));
  // Staging is for system users with the operator role on /peers.
  const canStage = !!rel && !!u?.system && hasRole(u, "operator", "/peers");
  const canRoll = !!rel && !!u && (!!u.system || (u.grants ?? []).some((g) => g.role === "operator" || g.role === "admin"));
  const remove = async () => {
    if (!rel) return;
    setBusy(true);
    try {
      await deleteRelease(refOf(rel));
      navigate("/releases");
    } catch (e) {
      setError(message(e));
      setBusy(false);
      setConfirming(false);
    }
  };
  return (
    <section class="ops release-detail">
      <nav class="crumbs">
        <a href="/releases" onClick={onLinkClick("/releases")}>
          Releases
        </a>
        <span class="sep">/</span>{" "}
        <span class="mono">
          {r.name} {r.version}
        </span>
      </nav>
      {error && (
        <p class="error" role="alert" data-test="release-error">
          {error}
        </p>
      )}
      {!rel && !error && <p class="muted">loading…</p>}
      {rel && (
        <>
          <h1>
            <span data-test="release-name">
              {rel.name} {rel.version}
            </span>
            <TenantBadge tenant={rel.tenant} />
            {rel.expired && <span class="badge expired">expired</span>}
            <span class="actions">
              {canRoll && !rolling && (
                <button type="button" data-test="start-rollout" onClick={() => setRolling(true)}>
                  Start a rollout
                </button>
              )}
              {canStage && !staging && (
                <button type="button" data-test="stage-release" onClick={() => setStaging(true)}>
                  Stage to tiers
                </button>
              )}
              {canDelete && (
                <button type="button" class="danger-solid" data-test="delete-release" disabled={busy} onClick={() => setConfirming(true)}>
                  Delete
                </button>
              )}
            </span>
          </h1>
          {confirming && (
            <div class="confirm" role="alertdialog" data-test="confirm-delete">
              <p>
                Delete release <b>{rel.name} {rel.version}</b>
                {rel.tenant ? ` of ${rel.tenant}` : " (shared)"}? Devices can no longer download its artifacts, and the
                artifacts no other release names are deleted from the object store.
              </p>
              <button type="button" class="danger-solid" data-test="confirm-delete-yes" disabled={busy} onClick={remove}>
                Delete
              </button>{" "}
              <button type="button" class="link" data-test="confirm-delete-no" onClick={() => setConfirming(false)}>
                keep it
              </button>
            </div>
          )}
          <dl class="meta" data-test="release-meta">
            <dt>tenant</dt>
            <dd>{rel.tenant || "shared (every tenant's devices may install it)"}</dd>
            <dt>created</dt>
            <dd>{fmtTime(rel.created)}</dd>
            <dt>expires</dt>
            <dd class={rel.expired ? "error" : ""}>
              {fmtTime(rel.expires)}
              {rel.expired && " (expired: devices refuse it)"}
            </dd>
            <dt>signing key</dt>
            <dd class="mono" data-test="release-key">
              {rel.key_id}
            </dd>
            <dt>sent by</dt>
            <dd data-test="release-by">
              {rel.by} <span class="muted">{fmtTime(rel.updated)}</span>
            </dd>
          </dl>
          {rolling && <RolloutForm rel={rel} onClose={() => setRolling(false)} />}
          {staging && <StageForm rel={rel} onClose={() => setStaging(false)} />}
          <h2>Artifacts</h2>
          <table class="grid" data-test="artifacts">
            <thead>
              <tr>
                <th>os</th>
                <th>arch</th>
                <th>type</th>
                <th>size</th>
                <th>sha256</th>
                <th>stored</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              {rel.artifacts.map((a) => (
                <ArtifactRow key={a.sha256 + a.os + a.arch + a.type} rel={rel} a={a} />
              ))}
            </tbody>
          </table>
          <UploadHelp rel={rel} canChange={canDelete} />
        </>
      )}
    </section>
  );
}

/** ArtifactRow is an artifact with its download: read with the
 * session's token, checked against its SHA-256, then saved. */
function ArtifactRow({ rel, a }: { rel: Release; a: ReleaseArtifact }) {
  const [got, setGot] = useState<number | null>(null);
  const [note, setNote] = useState("");
  const [error, setError] = useState("");
  const abort = useRef<AbortController | null>(null);
  useEffect(() => () => abort.current?.abort(), []);
  const download = async () => {
    const ac = new AbortController();
    abort.current = ac;
    setGot(0);
    setError("");
    setNote("");
    try {
      const { blob, verified } = await downloadArtifact(rel, a, setGot, ac.signal);
      saveBlob(blob, artifactFileName(rel, a));
      setNote(verified ? "saved, SHA-256 checked" : `saved (larger than ${fmtBytes(verifyLimit)}: check its SHA-256)`);
    } catch (e) {
      if (!ac.signal.aborted) setError(message(e));
    } finally {
      setGot(null);
    }
  };
  return (
    <tr data-artifact={`${a.os}/${a.arch}/${a.type}`}>
      <td>{a.os}</td>
      <td>{a.arch}</td>
      <td>{a.type}</td>
      <td title={`${a.size} bytes`}>{fmtBytes(a.size)}</td>
      <td class="mono sha">{a.sha256}</td>
      <td data-test="artifact-stored">{a.stored ? "yes" : `no: ${fmtBytes(a.uploaded)} of ${fmtBytes(a.size)} uploaded`}</td>
      <td class="actions">
        {a.stored && got === null && (
          <button type="button" class="link" data-test="download" onClick={download}>
            download
          </button>
        )}
        {got !== null && (
          <span data-test="downloading">
            {a.size > 0 ? Math.floor((100 * got) / a.size) : 0}%{" "}
            <button type="button" class="link" onClick={() => abort.current?.abort()}>
              cancel
            </button>
          </span>
        )}
        {note && (
          <span class="muted" data-test="download-note">
            {note}
          </span>
        )}
        {error && (
          <span class="error" data-test="download-error">
            {error}
          </span>
        )}
      </td>
    </tr>
  );
}
