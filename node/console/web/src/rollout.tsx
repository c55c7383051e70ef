// A rollout of a release: the form of the release screen that installs
// it on devices with a bulk job (docs/jobs.md) whose function is install
// and whose arguments name the release; the node resolves the release and
// version into the signed manifest the devices get. The target is a
// device filter with the Devices screen's inputs (its search parameters)
// or a list of device paths. Then the job's screen (bulk.tsx) shows its
// waves and each tier's progress.

import { useEffect, useState } from "preact/hooks";
import { session } from "./api";
import { healthGate, quantity } from "./bulk";
import { devicesURL } from "./devices";
import { countMatches, searchParams, type Query } from "./fleet";
import { canOperateBulk, createBulkJob, message, type BulkTarget } from "./ops-api";
import { navigate, onLinkClick } from "./router";
import type { InstallArgs, Release } from "./software-api";

/** RolloutDraft is the form's fields, as typed. */
export interface RolloutDraft {
  mode: "filter" | "paths";
  q: Query; // the Devices screen's filter inputs
  paths: string; // one device path a line (or comma separated)
  waves: string; // "5%, 25%, 70%" or counts "10, 100"
  successThreshold: string;
  maxFailures: string;
  minFinished: string;
  approval: boolean;
  maxConcurrency: string;
  perSecond: string;
  factor: string;
  every: string;
  maxPerSecond: string;
  healthOnline: boolean;
  healthVars: string;
  healthWithin: string;
  deadline: string; // datetime-local, the browser's time zone
  downgrade: boolean;
  check: string;
}

export interface InstallJob {
  function: "install";
  args: InstallArgs;
  target: BulkTarget;
  rollout?: Record<string, unknown>;
  deadline?: string;
}

function positiveInt(name: string, s: string): number | undefined {
  const t = s.trim();
  if (!t) return undefined;
  if (!/^\d+$/.test(t) || Number(t) < 1) throw new Error(`${name}: want a whole number, 1 or more`);
  return Number(t);
}

function positiveNumber(name: string, s: string): number | undefined {
  const t = s.trim();
  if (!t) return undefined;
  const n = Number(t);
  if (!/^\d+(\.\d+)?$/.test(t) || !(n > 0)) throw new Error(`${name}: want a number above 0`);
  return n;
}

/** targetOf is the bulk job's target of the draft: the filter's search
 * parameters (as the Devices screen sends them, less paging and order),
 * or the paths. */
export function targetOf(d: RolloutDraft): BulkTarget {
  if (d.mode === "paths") {
    const paths = d.paths.split(/[\s,]+/).filter((p) => p !== "");
    if (!paths.length) throw new Error("paths: give at least one device path (/devices/d-…)");
    for (const p of paths) if (!p.startsWith("/")) throw new Error(`path ${JSON.stringify(p)}: want a path from the root (/devices/d-…)`);
    return { paths };
  }
  const p = searchParams(d.q, "", 1);
  for (const k of ["limit", "sort", "after"]) p.delete(k);
  return { filter: Object.fromEntries(p) };
}

/** installJob is the body of POST /api/v1/jobs that installs rel as the
 * draft says, or throws saying which field is wrong. */
export function installJob(rel: Release, d: RolloutDraft, system: boolean): InstallJob {
  // A tenant user's job names its tenant's release or a shared one; a
  // system user names a tenant's release with tenant.
  const args: InstallArgs = { release: rel.name, version: rel.version, ...(system && rel.tenant ? { tenant: rel.tenant } : {}), downgrade: d.downgrade };
  if (d.check.trim()) args.check = d.check.trim();
  const rollout: Record<string, unknown> = {};
  const waves = d.waves.split(/[\s,]+/).filter((w) => w !== "");
  if (waves.length) rollout.waves = waves.map(quantity);
  if (d.successThreshold.trim()) rollout.success_threshold = quantity(d.successThreshold);
  if (d.approval) rollout.approval = true;
  if (d.maxFailures.trim()) rollout.max_failures = quantity(d.maxFailures);
  if (d.minFinished.trim()) {
    if (!d.maxFailures.trim()) throw new Error("counted after: applies to the error threshold, which is not given");
    rollout.min_finished = positiveInt("counted after", d.minFinished);
  }
  const conc = positiveInt("max concurrency", d.maxConcurrency);
  if (conc !== undefined) rollout.max_concurrency = conc;
  const perSecond = positiveNumber("rate", d.perSecond);
  const factor = positiveNumber("rate factor", d.factor);
  const every = positiveInt("rate every", d.every);
  const maxPerSecond = positiveNumber("rate up to", d.maxPerSecond);
  if (perSecond !== undefined) {
    if ((factor === undefined) !== (every === undefined)) throw new Error("rate: a factor and every go together");
    rollout.rate = {
      per_second: perSecond,
      ...(factor !== undefined ? { factor, every } : {}),
      ...(maxPerSecond !== undefined ? { max_per_second: maxPerSecond } : {}),
    };
  } else if (factor !== undefined || every !== undefined || maxPerSecond !== undefined) {
    throw new Error("rate: give the devices a second first");
  }
  const health = healthGate(d.healthOnline, d.healthVars, d.healthWithin);
  if (health) rollout.health = health;
  const job: InstallJob = { function: "install", args, target: targetOf(d) };
  if (Object.keys(rollout).length) job.rollout = rollout;
  if (d.deadline.trim()) {
    const t = new Date(d.deadline);
    if (isNaN(t.getTime())) throw new Error("deadline: not a date and time");
    if (t.getTime() <= Date.now()) throw new Error("deadline: in the past");
    job.deadline = t.toISOString().replace(/\.\d{3}Z$/, "Z");
  }
  return job;
}

const blank: RolloutDraft = {
  mode: "filter",
  q: { path: "/", type: "device", tenant: "", online: "", filters: "" },
  paths: "",
  waves: "",
  successThreshold: "",
  maxFailures: "",
  minFinished: "",
  approval: false,
  maxConcurrency: "",
  perSecond: "",
  factor: "",
  every: "",
  maxPerSecond: "",
  healthOnline: false,
  healthVars: "",
  healthWithin: "",
  deadline: "",
  downgrade: false,
  check: "",
};

/** RolloutForm starts a rollout of rel and opens its job. */
export function RolloutForm({ rel, onClose }: { rel: Release; onClose: () => void }) {
  const [d, setDraft] = useState<RolloutDraft>(blank);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const u = session()?.user;
  // An error is about the fields as they were: a change clears it.
  const setD = (next: RolloutDraft) => {
    setDraft(next);
    setError("");
  };
  const text = (k: keyof RolloutDraft) => (e: Event) => setD({ ...d, [k]: (e.currentTarget as HTMLInputElement).value });
  const flag = (k: keyof RolloutDraft) => (e: Event) => setD({ ...d, [k]: (e.currentTarget as HTMLInputElement).checked });
  const query = (k: keyof Query) => (e: Event) => setD({ ...d, q: { ...d.q, [k]: (e.currentTarget as HTMLInputElement).value } });

  // What the filter matches here and below now (the job selects again on
  // each node when it reaches it).
  const countKey = d.mode === "filter" ? JSON.stringify(d.q) : "";
  const [count, setCount] = useState<{ key: string; text: string }>({ key: "", text: "" });
  useEffect(() => {
    if (!countKey) return;
    let stale = false;
    const t = setTimeout(() => {
      countMatches({ ...d.q, sort: "" }).then(
        (c) => !stale && setCount({ key: countKey, text: `${c.total.toLocaleString()}${c.capped ? "+" : ""} devices match now` }),
        (e) => !stale && setCount({ key: countKey, text: message(e) }),
      );
    }, 300);
    return () => {
      stale = true;
      clearTimeout(t);
    };
  }, [countKey]);

  let target: BulkTarget | null = null;
  try {
    target = targetOf(d);
  } catch {
    // Shown on submit.
  }
  const allowed = !target || canOperateBulk(u, target);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    let body: InstallJob;
    try {
      body = installJob(rel, d, !!u?.system);
    } catch (err) {
      setError(message(err));
      return;
    }
    setBusy(true);
    try {
      const j = await createBulkJob(body);
      navigate(`/jobs/${encodeURIComponent(j.id)}`);
    } catch (err) {
      setError(message(err));
      setBusy(false);
    }
  };
  const preview = devicesURL(d.q);
  return (
    <form class="rollout" data-test="rollout-form" onSubmit={submit}>
      <h2>
        Roll out {rel.name} {rel.version}
      </h2>
      <p class="muted">
        Runs the function <span class="mono">install</span>, naming this release, on the devices the target selects,
        here and on the nodes below; each node selects its own devices when the job reaches it.
      </p>
      <fieldset data-test="rollout-target">
        <legend>target</legend>
        <label>
          <input type="radio" name="mode" value="filter" checked={d.mode === "filter"} onChange={() => setD({ ...d, mode: "filter" })} /> devices
          matching a filter
        </label>{" "}
        <label>
          <input type="radio" name="mode" value="paths" checked={d.mode === "paths"} onChange={() => setD({ ...d, mode: "paths" })} /> these
          devices
        </label>
        {d.mode === "filter" ? (
          <div class="row">
            <label class="field">
              subtree
              <input name="target_path" value={d.q.path} onInput={query("path")} />
            </label>
            <label class="field">
              type
              <input name="target_type" value={d.q.type} onInput={query("type")} size={8} />
            </label>
            {u?.system && (
              <label class="field">
                tenant
                <input name="target_tenant" value={d.q.tenant} onInput={query("tenant")} size={8} />
              </label>
            )}
            <label class="field">
              online
              <select name="target_online" value={d.q.online} onChange={query("online")}>
                <option value="">any</option>
                <option value="true">online</option>
                <option value="false">offline</option>
              </select>
            </label>
            <label class="field grow">
              labels and variables (site=lyon var.os=linux)
              <input name="target_filters" value={d.q.filters} onInput={query("filters")} />
            </label>
            <span class="muted" data-test="rollout-count">
              {count.key === countKey ? count.text : ""}{" "}
              <a href={preview} onClick={onLinkClick(preview)}>
                list them
              </a>
            </span>
          </div>
        ) : (
          <label class="field grow">
            device paths, one a line
            <textarea name="target_paths" rows={3} value={d.paths} onInput={text("paths")} />
          </label>
        )}
      </fieldset>
      <fieldset>
        <legend>waves and thresholds</legend>
        <div class="row">
          <label class="field">
            waves
            <input name="waves" placeholder="5%, 25%, 70%" title="counts (10) or percentages (5%) of each node's devices" value={d.waves} onInput={text("waves")} size={14} />
          </label>
          <label class="field">
            success threshold
            <input name="success_threshold" placeholder="95%" title="succeeded devices of a wave that open the next" value={d.successThreshold} onInput={text("successThreshold")} size={6} />
          </label>
          <label class="field">
            error threshold
            <input name="max_failures" placeholder="2%" title="failed devices beyond this pause the rollout" value={d.maxFailures} onInput={text("maxFailures")} size={6} />
          </label>
          <label class="field">
            counted after
            <input name="min_finished" placeholder="20" title="count the error threshold once this many devices finished" value={d.minFinished} onInput={text("minFinished")} size={4} />
          </label>
          <label class="check">
            <input type="checkbox" name="approval" checked={d.approval} onChange={flag("approval")} /> approve each wave
          </label>
        </div>
      </fieldset>
      <fieldset>
        <legend>pace</legend>
        <div class="row">
          <label class="field">
            max concurrency
            <input name="max_concurrency" placeholder="500" title="device jobs not final at once on each node" value={d.maxConcurrency} onInput={text("maxConcurrency")} size={6} />
          </label>
          <label class="field">
            rate (devices/s)
            <input name="rate" placeholder="10" value={d.perSecond} onInput={text("perSecond")} size={5} />
          </label>
          <label class="field">
            × factor
            <input name="rate_factor" placeholder="2" value={d.factor} onInput={text("factor")} size={3} />
          </label>
          <label class="field">
            every
            <input name="rate_every" placeholder="100" title="succeeded devices between two increases" value={d.every} onInput={text("every")} size={4} />
          </label>
          <label class="field">
            up to
            <input name="rate_max" placeholder="200" value={d.maxPerSecond} onInput={text("maxPerSecond")} size={4} />
          </label>
          <label class="field">
            deadline
            <input type="datetime-local" name="deadline" title="default: an hour from now" value={d.deadline} onInput={text("deadline")} />
          </label>
        </div>
      </fieldset>
      <fieldset>
        <legend>install</legend>
        <div class="row">
          <label class="check">
            <input type="checkbox" name="downgrade" checked={d.downgrade} onChange={flag("downgrade")} /> allow a downgrade
          </label>
          <label class="field grow">
            health check command (optional)
            <input name="check" placeholder="systemctl is-active agent" value={d.check} onInput={text("check")} />
          </label>
        </div>
        <div class="row health" data-test="rollout-health">
          health gate:
          <label class="check">
            <input type="checkbox" name="health_online" checked={d.healthOnline} onChange={flag("healthOnline")} /> online
          </label>
          <input name="health_vars" placeholder="fw=2.1.0" title="variables the device must show: name=value, comma separated" value={d.healthVars} onInput={text("healthVars")} size={14} />
          within
          <input name="health_within" placeholder="10m" value={d.healthWithin} onInput={text("healthWithin")} size={5} />
        </div>
      </fieldset>
      {!allowed && (
        <p class="error" data-test="rollout-not-allowed">
          You do not have the operator role on what this target selects: the node will refuse it.
        </p>
      )}
      <div class="row">
        <button type="submit" data-test="rollout-submit" disabled={busy}>
          Start rollout
        </button>
        <button type="button" class="link" onClick={onClose}>
          close
        </button>
      </div>
      {error && (
        <p class="error" role="alert" data-test="rollout-error">
          {error}
        </p>
      )}
    </form>
  );
}
