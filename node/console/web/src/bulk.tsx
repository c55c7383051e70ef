// Bulk jobs in the console: the list on the Jobs screen (GET
// /api/v1/jobs?bulk=true), one bulk job with its waves, its progress per
// node below and its failures page by page, with Pause, Resume, Cancel and
// Retry for an operator; and the form that runs a function on the devices
// the Devices screen lists (its search parameters are the job's target
// filter). The node decides what is allowed; roles only decide what shows.

import { useEffect, useState } from "preact/hooks";
import { Pager, StatusRow } from "./pager";
import { session } from "./api";
import {
  bulkAction,
  bulkFailures,
  canOperateBulk,
  createBulkJob,
  finished,
  fmtTime,
  getBulkJob,
  listBulkJobs,
  message,
  type BulkCounters,
  type BulkFailure,
  type BulkJob,
  type BulkJobSummary,
  type BulkTarget,
} from "./ops-api";
import { navigate, onLinkClick, routeTo } from "./router";
import { installOf, releaseRoute, type InstallArgs } from "./software-api";

const pageSize = 20;
const failurePage = 50;

const bulkRoute = (id: string) => `/jobs/${encodeURIComponent(id)}`;

/** Progress is a bar of a job's finished devices: succeeded, then failed
 * and expired, then cancelled, of the total. */
export function Progress({ c }: { c: BulkCounters }) {
  const pct = (n: number) => (c.total > 0 ? `${(100 * n) / c.total}%` : "0%");
  return (
    <span class="bulk-progress" data-test="progress" title={countsText(c)}>
      <span class="bar">
        <span class="ok" style={{ width: pct(c.succeeded) }} />
        <span class="bad" style={{ width: pct(c.failed + c.expired) }} />
        <span class="off" style={{ width: pct(c.cancelled) }} />
      </span>
      <span class="count" data-test="progress-count">
        {finished(c)}/{c.total}
      </span>
    </span>
  );
}

export function countsText(c: BulkCounters): string {
  return `succeeded ${c.succeeded}, failed ${c.failed}, expired ${c.expired}, cancelled ${c.cancelled}, queued ${c.queued}, delivered ${c.delivered}, running ${c.running}` + (c.verifying ? `, verifying ${c.verifying}` : "");
}

/** BulkJobs lists the bulk jobs the user may see, newest first. */
export function BulkJobs() {
  const [pages, setPages] = useState<string[]>([]);
  const [jobs, setJobs] = useState<BulkJobSummary[] | null>(null);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  const before = pages[pages.length - 1];
  useEffect(() => {
    let live = true;
    listBulkJobs(before, pageSize).then(
      (p) => live && (setJobs(p.jobs ?? []), setNext(p.next), setError("")),
      (e) => live && (setError(message(e)), setJobs([])),
    );
    return () => {
      live = false;
    };
  }, [before, tick]);
  // Bulk jobs are records: read again every 2 s while one is not over.
  useEffect(() => {
    if (!jobs?.some((j) => j.state === "running" || j.state === "paused")) return;
    const t = setTimeout(() => setTick((n) => n + 1), 2000);
    return () => clearTimeout(t);
  }, [jobs]);
  if (error.includes("not enabled")) return null;
  return (
    <>
      <h2>Bulk jobs</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table class="grid" data-test="bulk-jobs">
        <thead>
          <tr>
            <th>job</th>
            <th>function</th>
            <th>state</th>
            <th>progress</th>
            <th>by</th>
            <th>created</th>
          </tr>
        </thead>
        <tbody>
          {jobs === null && (
            <StatusRow cols={6} text="loading…" />
          )}
          {jobs?.length === 0 && !error && (
            <StatusRow cols={6} text="no bulk jobs" />
          )}
          {jobs?.map((j) => (
            <tr key={j.id} data-bulk={j.id}>
              <td>
                <a href={bulkRoute(j.id)} onClick={onLinkClick(bulkRoute(j.id))} class="mono">
                  {j.id}
                </a>
              </td>
              <td>{j.function}</td>
              <td class={`state ${j.state}`} title={j.reason}>
                {j.state}
              </td>
              <td>
                <Progress c={j.counters} />
              </td>
              <td>{j.created_by}</td>
              <td>{fmtTime(j.created)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {(pages.length > 0 || next) && (
        <Pager pages={pages} setPages={setPages} next={next} back="newer" forward="older" testId="bulk-older" />
      )}
      <h2>Device jobs</h2>
    </>
  );
}

/** BulkJobScreen shows one bulk job, read again every second until it is
 * done or cancelled. */
export function BulkJobScreen({ id }: { id: string }) {
  const [job, setJob] = useState<BulkJob | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    getBulkJob(id).then(
      (j) => live && (setJob(j), setError("")),
      (e) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [id, tick]);
  const over = !!job && (job.state === "done" || job.state === "cancelled");
  useEffect(() => {
    if (!job || over) return;
    const t = setTimeout(() => setTick((n) => n + 1), 1000);
    return () => clearTimeout(t);
  }, [job]);

  const act = (a: "pause" | "resume" | "cancel" | "retry") => async () => {
    setBusy(true);
    try {
      setJob(await bulkAction(id, a));
      setError("");
      setTick((n) => n + 1);
    } catch (e) {
      setError(message(e));
    } finally {
      setBusy(false);
    }
  };
  const operator = !!job && canOperateBulk(session()?.user, job.target);
  const failedSome = !!job && job.counters.failed + job.counters.expired > 0;
  const install = job ? installOf(job.function, job.args) : null;
  const peers = job ? Object.entries(job.peers ?? {}).sort(([a], [b]) => a.localeCompare(b)) : [];
  return (
    <section class="ops job-detail bulk-detail">
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
            {job.function}
            {install && (
              <span data-test="bulk-install">
                {install.release} {install.version}
              </span>
            )}{" "}
            <span class={`state ${job.state}`} data-test="job-state">{job.state}</span>
            {operator && (
              <span class="actions" data-test="bulk-actions">
                {job.state === "running" && (
                  <button type="button" data-test="bulk-pause" disabled={busy} onClick={act("pause")}>
                    Pause
                  </button>
                )}
                {job.state === "paused" && (
                  <button type="button" data-test="bulk-resume" disabled={busy} onClick={act("resume")}>
                    Resume
                  </button>
                )}
                {!over && (
                  <button type="button" data-test="bulk-cancel" disabled={busy} onClick={act("cancel")}>
                    Cancel
                  </button>
                )}
                {failedSome && job.state !== "cancelled" && (
                  <button type="button" data-test="bulk-retry" disabled={busy} onClick={act("retry")}>
                    Retry failed
                  </button>
                )}
              </span>
            )}
          </h1>
          {job.reason && (
            <p class="muted" data-test="bulk-reason">
              {job.reason}
            </p>
          )}
          <p data-test="bulk-counters">
            <Progress c={job.counters} /> <span class="muted">{countsText(job.counters)}</span>
          </p>
          <dl class="meta">
            <dt>target</dt>
            <dd class="mono" data-test="bulk-target">
              {JSON.stringify(job.target)}
            </dd>
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
            {job.rollout !== undefined && (
              <>
                <dt>rollout</dt>
                <dd class="mono">{JSON.stringify(job.rollout)}</dd>
              </>
            )}
            {install ? (
              <InstallMeta install={install} />
            ) : (
              job.args !== undefined && (
                <>
                  <dt>args</dt>
                  <dd class="mono">{JSON.stringify(job.args)}</dd>
                </>
              )
            )}
          </dl>
          <h2>Waves</h2>
          <table class="grid" data-test="bulk-waves">
            <thead>
              <tr>
                <th>wave</th>
                <th>size</th>
                <th>state</th>
                <th>progress</th>
              </tr>
            </thead>
            <tbody>
              {job.waves.map((w, i) => (
                <tr key={i} data-wave={i + 1}>
                  <td>{i + 1}</td>
                  <td>{w.size}</td>
                  <td class={`state ${w.state}`}>{w.state}</td>
                  <td>
                    <Progress c={w.counters} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Nodes</h2>
          <table class="grid" data-test="bulk-peers">
            <thead>
              <tr>
                <th>node</th>
                <th>state</th>
                <th>progress</th>
                <th>note</th>
              </tr>
            </thead>
            <tbody>
              <tr data-peer="/">
                <td>this node</td>
                <td class={`state ${job.local.state}`}>{job.local.state}</td>
                <td>
                  <Progress c={job.local} />
                </td>
                <td>{job.local.reason}</td>
              </tr>
              {peers.map(([p, c]) => (
                <tr key={p} data-peer={p}>
                  <td>
                    <a href={routeTo("/tree", p)} onClick={onLinkClick(routeTo("/tree", p))}>
                      {p}
                    </a>
                  </td>
                  <td class={`state ${c.state}`}>{c.state}</td>
                  <td>
                    <Progress c={c} />
                  </td>
                  <td class={c.error ? "error" : ""}>{c.error ?? c.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Failures id={id} failed={job.counters.failed + job.counters.expired} />
        </>
      )}
    </section>
  );
}

/** InstallMeta shows what a job that installs a release installs, in
 * place of its raw arguments (which hold the whole signed manifest). */
function InstallMeta({ install }: { install: InstallArgs }) {
  const to = releaseRoute({ name: install.release, version: install.version, tenant: install.tenant });
  return (
    <>
      <dt>release</dt>
      <dd data-test="bulk-release">
        <a href={to} onClick={onLinkClick(to)}>
          {install.release} {install.version}
        </a>{" "}
        <span class="muted">{install.tenant ? `of ${install.tenant}` : "shared"}</span>
      </dd>
      <dt>downgrade</dt>
      <dd data-test="bulk-downgrade">{install.downgrade ? "allowed" : "refused"}</dd>
      {install.check && (
        <>
          <dt>health check</dt>
          <dd class="mono" data-test="bulk-check">
            {install.check}
          </dd>
        </>
      )}
    </>
  );
}

/** Failures lists a bulk job's failed devices page by page; it reads
 * again when the number of failures changes. */
function Failures({ id, failed }: { id: string; failed: number }) {
  const [pages, setPages] = useState<string[]>([]);
  const [rows, setRows] = useState<BulkFailure[]>([]);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState("");
  const after = pages[pages.length - 1] ?? "";
  useEffect(() => {
    let live = true;
    bulkFailures(id, after, failurePage).then(
      (p) => live && (setRows(p.failures ?? []), setNext(p.next), setError("")),
      (e) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [id, after, failed]);
  return (
    <>
      <h2>Failures</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <table class="grid" data-test="bulk-failures">
        <thead>
          <tr>
            <th>device</th>
            <th>state</th>
            <th>error</th>
            <th>time</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <StatusRow cols={4} text="no failures" />
          )}
          {rows.map((f) => (
            <tr key={f.node + f.path + (f.job ?? "")} data-failure={f.path}>
              <td>
                <a href={routeTo("/device", f.path)} onClick={onLinkClick(routeTo("/device", f.path))}>
                  {f.path}
                </a>
              </td>
              <td class={`state ${f.state}`}>{f.state}</td>
              <td>{f.error}</td>
              <td>{fmtTime(f.time)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {(pages.length > 0 || next) && (
        <Pager pages={pages} setPages={setPages} next={next} back="first" forward="next" testId="failures-next" />
      )}
    </>
  );
}

/** quantity reads "5" as a count and "5%" as a percentage. */
export function quantity(s: string): number | string {
  const t = s.trim();
  if (/^\d+(\.\d+)?%$/.test(t)) return t;
  if (/^\d+$/.test(t)) return Number(t);
  throw new Error(`${JSON.stringify(t)}: want a count (10) or a percentage (2%)`);
}

/** healthGate is the rollout's health object of the form's fields
 * (undefined: none): online, variables as "name=value, ...", within. */
export function healthGate(online: boolean, vars: string, within: string): Record<string, unknown> | undefined {
  const vs: Record<string, string> = {};
  for (const kv of vars.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`health gate ${JSON.stringify(kv)}: want name=value`);
    vs[kv.slice(0, i).trim()] = kv.slice(i + 1).trim();
  }
  const hasVars = Object.keys(vs).length > 0;
  if (!online && !hasVars && !within.trim()) return undefined;
  if (!online && !hasVars) throw new Error("health gate: check online or give a variable (fw=2.1.0)");
  if (!within.trim()) throw new Error("health gate: give within, how long a device may take (10m)");
  return { ...(online ? { online: true } : {}), ...(hasVars ? { vars: vs } : {}), within: within.trim() };
}

/** RunOnDevices is the form of the Devices screen that runs a function on
 * every device its list's filter matches, here and below. */
export function RunOnDevices({ filter, onClose }: { filter: Record<string, string>; onClose: () => void }) {
  const [fn, setFn] = useState("");
  const [args, setArgs] = useState("{}");
  const [waves, setWaves] = useState("");
  const [maxFailures, setMaxFailures] = useState("");
  const [healthOnline, setHealthOnline] = useState(false);
  const [healthVars, setHealthVars] = useState("");
  const [healthWithin, setHealthWithin] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const target: BulkTarget = { filter };
  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    let body: Parameters<typeof createBulkJob>[0];
    try {
      let a: unknown = undefined;
      if (args.trim()) {
        try {
          a = JSON.parse(args);
        } catch {
          throw new Error("args: not JSON");
        }
        if (a === null || typeof a !== "object" || Array.isArray(a)) throw new Error('args: want a JSON object such as {"count": 3}');
      }
      const rollout: Record<string, unknown> = {};
      const ws = waves.split(/[\s,]+/).filter((w) => w !== "");
      if (ws.length) rollout.waves = ws.map((w) => (/^\d+$/.test(w) ? `${w}%` : quantity(w)));
      if (maxFailures.trim()) rollout.max_failures = quantity(maxFailures);
      const health = healthGate(healthOnline, healthVars, healthWithin);
      if (health) rollout.health = health;
      body = { function: fn.trim(), args: a, target, rollout: Object.keys(rollout).length ? rollout : undefined };
    } catch (err) {
      setError(message(err));
      return;
    }
    setBusy(true);
    try {
      const j = await createBulkJob(body);
      navigate(bulkRoute(j.id));
    } catch (err) {
      setError(message(err));
      setBusy(false);
    }
  };
  return (
    <form class="run-bulk" data-test="run-bulk" onSubmit={submit}>
      <p class="muted">
        Runs a function on every device the list's filter matches, here and on the nodes below:{" "}
        <span class="mono" data-test="run-target">
          {JSON.stringify(filter)}
        </span>
      </p>
      <label class="field">
        function
        <input name="function" required value={fn} onInput={(e) => setFn(e.currentTarget.value)} />
      </label>
      <label class="field grow">
        args (JSON)
        <input name="args" value={args} onInput={(e) => setArgs(e.currentTarget.value)} />
      </label>
      <label class="field">
        waves (%)
        <input name="waves" placeholder="5,25,70" value={waves} onInput={(e) => setWaves(e.currentTarget.value)} size={10} />
      </label>
      <label class="field">
        max failures
        <input name="max_failures" placeholder="2%" value={maxFailures} onInput={(e) => setMaxFailures(e.currentTarget.value)} size={6} />
      </label>
      <fieldset class="health" data-test="run-bulk-health">
        <legend>health gate</legend>
        <label>
          <input type="checkbox" name="health_online" checked={healthOnline} onChange={(e) => setHealthOnline(e.currentTarget.checked)} /> online
        </label>
        <input name="health_vars" placeholder="fw=2.1.0" title="variables the device must show: name=value, comma separated" value={healthVars} onInput={(e) => setHealthVars(e.currentTarget.value)} size={14} />
        within
        <input name="health_within" placeholder="10m" value={healthWithin} onInput={(e) => setHealthWithin(e.currentTarget.value)} size={5} />
      </fieldset>
      <button type="submit" data-test="run-bulk-submit" disabled={busy || !fn.trim()}>
        Run
      </button>
      <button type="button" class="link" onClick={onClose}>
        close
      </button>
      {error && (
        <p class="error" role="alert" data-test="run-bulk-error">
          {error}
        </p>
      )}
    </form>
  );
}
