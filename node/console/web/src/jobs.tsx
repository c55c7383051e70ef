// The Jobs screens: the node's bulk jobs (bulk.tsx), then its jobs newest first, filtered and paged on
// the server (GET /api/v1/jobs), and one job with its history
// (GET /api/v1/jobs/{id}, ?node= for a job owned by a node below), which
// an operator may cancel.

import { useEffect, useState } from "preact/hooks";
import { finalStates, session } from "./api";
import { BulkJobs } from "./bulk";
import { cancelJob, fmtTime, getJobFull, hasRole, listJobs, message, type JobFilter, type JobFull } from "./ops-api";
import { Pager, StatusRow } from "./pager";
import { onLinkClick, routeTo } from "./router";
import { installOf, releaseRoute } from "./software-api";

const states = ["", "queued", "delivered", "running", "succeeded", "failed", "expired", "cancelled"];
const pageSize = 50;

export function jobRoute(id: string, node?: string): string {
  return `/jobs/${encodeURIComponent(id)}${node ? `?${new URLSearchParams({ node })}` : ""}`;
}

export function JobsScreen() {
  const [form, setForm] = useState<JobFilter>({ path: "", device: "", state: "" });
  const [filter, setFilter] = useState<JobFilter>({});
  const [pages, setPages] = useState<string[]>([]); // the `before` of each page shown so far
  const [jobs, setJobs] = useState<JobFull[] | null>(null);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState("");

  const before = pages[pages.length - 1];
  useEffect(() => {
    let live = true;
    setError("");
    listJobs({ ...filter, limit: pageSize, before }).then(
      (p) => {
        if (!live) return;
        setJobs(p.jobs ?? []);
        setNext(p.next);
      },
      (e) => live && (setError(message(e)), setJobs([])),
    );
    return () => {
      live = false;
    };
  }, [filter, before]);

  const apply = (e: Event) => {
    e.preventDefault();
    setPages([]);
    setFilter({ path: form.path || undefined, device: form.device || undefined, state: form.state || undefined });
  };
  return (
    <section class="ops jobs">
      <h1>Jobs</h1>
      <BulkJobs />
      <form class="filters" data-test="job-filters" onSubmit={apply}>
        <label class="field">
          subtree
          <input name="path" placeholder="/" value={form.path} onInput={(e) => setForm({ ...form, path: e.currentTarget.value })} />
        </label>
        <label class="field">
          device
          <input name="device" placeholder="d-…" value={form.device} onInput={(e) => setForm({ ...form, device: e.currentTarget.value })} />
        </label>
        <label class="field">
          state
          <select name="state" value={form.state} onChange={(e) => setForm({ ...form, state: e.currentTarget.value })}>
            {states.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Filter</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table class="grid" data-test="jobs">
        <thead>
          <tr>
            <th>job</th>
            <th>function</th>
            <th>path</th>
            <th>state</th>
            <th>by</th>
            <th>created</th>
          </tr>
        </thead>
        <tbody>
          {jobs === null && (
            <StatusRow cols={6} text="loading…" />
          )}
          {jobs?.length === 0 && !error && (
            <StatusRow cols={6} text="no jobs" />
          )}
          {jobs?.map((j) => (
            <tr key={j.id} data-job={j.id}>
              <td>
                <a href={jobRoute(j.id)} onClick={onLinkClick(jobRoute(j.id))} class="mono">
                  {j.id}
                </a>
              </td>
              <td>{j.function}</td>
              <td>
                <a href={routeTo("/device", j.path)} onClick={onLinkClick(routeTo("/device", j.path))}>
                  {j.path}
                </a>
              </td>
              <td class={`state ${j.state}`}>{j.state}</td>
              <td>{j.created_by}</td>
              <td>{fmtTime(j.created)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager pages={pages} setPages={setPages} next={next} back="newer" forward="older" testId="older" />
    </section>
  );
}

export function JobScreen({ id }: { id: string }) {
  const node = new URLSearchParams(location.search).get("node") ?? undefined;
  const [job, setJob] = useState<JobFull | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let live = true;
    getJobFull(id, node).then(
      (j) => live && (setJob(j), setError("")),
      (e) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [id, node, tick]);
  // Jobs are records, not contexts: the change stream does not carry them,
  // so a job that is not final is read again every second until it is.
  useEffect(() => {
    if (!job || finalStates.has(job.state)) return;
    const t = setTimeout(() => setTick((n) => n + 1), 1000);
    return () => clearTimeout(t);
  }, [job]);

  const cancel = async () => {
    setBusy(true);
    try {
      setJob(await cancelJob(id));
      setError("");
    } catch (e) {
      setError(message(e));
    } finally {
      setBusy(false);
    }
  };
  // A job installing a release shows the release, not first the signed
  // manifest its arguments hold.
  const install = job ? installOf(job.function ?? "", job.args) : null;
  const releaseTo = install ? releaseRoute({ name: install.release, version: install.version, tenant: install.tenant }) : "";
  const canCancel = !!job && !node && !finalStates.has(job.state) && hasRole(session()?.user, "operator", job.path);
  return (
    <section class="ops job-detail">
      <nav class="crumbs">
        <a href="/jobs" onClick={onLinkClick("/jobs")}>
          Jobs
        </a>
        <span class="sep">/</span> <span class="mono">{id}</span>
      </nav>
      {error && (
        <p class="error" role="alert" data-test="job-error-msg">
          {error}
        </p>
      )}
      {!job && !error && <p class="muted">loading…</p>}
      {job && (
        <>
          <h1>
            {job.function} <span class={`state ${job.state}`} data-test="job-state">{job.state}</span>
            {canCancel && (
              <button type="button" data-test="cancel-job" disabled={busy} onClick={cancel}>
                Cancel
              </button>
            )}
          </h1>
          <dl class="meta">
            <dt>path</dt>
            <dd>
              <a href={routeTo("/device", job.path)} onClick={onLinkClick(routeTo("/device", job.path))}>
                {job.path}
              </a>
            </dd>
            {job.node && (
              <>
                <dt>node</dt>
                <dd>{job.node}</dd>
              </>
            )}
            {job.tenant && (
              <>
                <dt>tenant</dt>
                <dd>{job.tenant}</dd>
              </>
            )}
            <dt>created</dt>
            <dd>
              {fmtTime(job.created)} {job.created_by && `by ${job.created_by}`}
            </dd>
            {job.deadline && (
              <>
                <dt>deadline</dt>
                <dd>{fmtTime(job.deadline)}</dd>
              </>
            )}
          </dl>
          {install && (
            <p data-test="job-install">
              installs{" "}
              <a href={releaseTo} onClick={onLinkClick(releaseTo)}>
                {install.release} {install.version}
              </a>{" "}
              <span class="muted">
                {install.tenant ? `of ${install.tenant}` : "shared"}, downgrade {install.downgrade ? "allowed" : "refused"}
                {install.check ? `, health check: ${install.check}` : ""}
              </span>
            </p>
          )}
          {job.args !== undefined &&
            (install ? (
              <details>
                <summary>arguments (the release's signed manifest)</summary>
                <pre>{JSON.stringify(job.args, null, 2)}</pre>
              </details>
            ) : (
              <>
                <h2>Arguments</h2>
                <pre>{JSON.stringify(job.args, null, 2)}</pre>
              </>
            ))}
          {job.result !== undefined && (
            <>
              <h2>Result</h2>
              <pre data-test="job-result">{JSON.stringify(job.result, null, 2)}</pre>
            </>
          )}
          {job.error && (
            <p class="error" data-test="job-error">
              {job.error}
            </p>
          )}
          <h2>History</h2>
          <table class="grid" data-test="job-history">
            <thead>
              <tr>
                <th>state</th>
                <th>time</th>
                <th>detail</th>
              </tr>
            </thead>
            <tbody>
              {(job.history ?? []).map((h, i) => (
                <tr key={i}>
                  <td class={`state ${h.state}`}>{h.state}</td>
                  <td>{fmtTime(h.time)}</td>
                  <td>{h.detail}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
