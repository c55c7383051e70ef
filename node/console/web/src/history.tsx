// The history chart of the Device screen: one numeric or boolean
// variable over the last hour, day or week, one point per step
// (GET /api/v1/history, averaged by the node that keeps the history,
// which for a mounted device is the node below that owns it).

import { useEffect, useState } from "preact/hooks";
import { APIError, encodePath, request } from "./api";

export type HistoryAnswer = {
  path: string;
  var: string;
  from: number;
  to: number;
  step?: number;
  agg?: string;
  points: [number, number | null][];
};

export function getHistory(p: string, v: string, from: number, to: number, step: string, agg = "avg"): Promise<HistoryAnswer> {
  const q = new URLSearchParams({ var: v, from: String(from), to: String(to), step, agg });
  return request<HistoryAnswer>("GET", `/api/v1/history/${encodePath(p)}?${q}`);
}

/** The ranges offered, each with the step that gives a few hundred points. */
export const ranges: { name: string; ms: number; step: string }[] = [
  { name: "1h", ms: 3600_000, step: "15s" },
  { name: "24h", ms: 86400_000, step: "5m" },
  { name: "7d", ms: 7 * 86400_000, step: "30m" },
];

/** fmtStep writes a step in milliseconds as the ranges name them (15s, 5m, 1h). */
export function fmtStep(ms: number): string {
  if (ms % 3600_000 === 0) return `${ms / 3600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${ms / 1000}s`;
}

const W = 720;
const H = 200;
const PAD = { l: 56, r: 12, t: 10, b: 24 };

export function HistoryChart({ path, names }: { path: string; names: string[] }) {
  const [name, setName] = useState(names[0] ?? "");
  const [range, setRange] = useState(ranges[0]);
  const [data, setData] = useState<HistoryAnswer | null>(null);
  const [error, setError] = useState("");
  const [reload, setReload] = useState(0);

  useEffect(() => {
    if (!names.includes(name) && names.length > 0) setName(names[0]);
  }, [names.join("\u0000")]);

  useEffect(() => {
    if (!name) return;
    let live = true;
    const to = Date.now();
    setError("");
    setData(null);
    getHistory(path, name, to - range.ms, to, range.step).then(
      (h) => live && setData(h),
      (e) => live && (setData(null), setError(e instanceof APIError ? `${e.message} (${e.code})` : String(e))),
    );
    return () => {
      live = false;
    };
  }, [path, name, range, reload]);

  if (names.length === 0) return null;
  return (
    <div class="history" data-test="history">
      <div class="history-bar">
        <select value={name} onChange={(e) => setName((e.target as HTMLSelectElement).value)} data-test="history-var">
          {names.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
        {ranges.map((r) => (
          <button
            key={r.name}
            type="button"
            class={r === range ? "toggle on" : "toggle"}
            onClick={() => setRange(r)}
            data-test={`history-range-${r.name}`}
          >
            {r.name}
          </button>
        ))}
        <button type="button" class="link" onClick={() => setReload((n) => n + 1)}>
          refresh
        </button>
        {data && (
          <span class="muted" data-test="history-count">
            {data.points.length} points, {data.agg} per {fmtStep(data.step ?? 0)}
          </span>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {data && <Plot data={data} />}
    </div>
  );
}

function Plot({ data }: { data: HistoryAnswer }) {
  const pts = data.points.filter((p): p is [number, number] => p[1] !== null);
  if (pts.length === 0) return <p class="muted">no history in this range</p>;
  let lo = Math.min(...pts.map((p) => p[1]));
  let hi = Math.max(...pts.map((p) => p[1]));
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const x = (t: number) => PAD.l + ((t - data.from) / Math.max(1, data.to - data.from)) * (W - PAD.l - PAD.r);
  const y = (v: number) => PAD.t + (1 - (v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  // A gap of more than two steps breaks the line.
  const gap = 2 * (data.step ?? 0);
  let d = "";
  pts.forEach((p, i) => {
    const jump = i === 0 || (gap > 0 && p[0] - pts[i - 1][0] > gap);
    d += `${jump ? "M" : "L"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`;
  });
  const ticks = [lo, (lo + hi) / 2, hi];
  const fmt = (v: number) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(3));
  const tfmt = (t: number) => {
    const dt = new Date(t);
    return data.to - data.from > 86400_000 ? dt.toLocaleDateString() : dt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  };
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`history of ${data.var}`} data-test="history-chart">
      {ticks.map((v) => (
        <g key={v}>
          <line x1={PAD.l} x2={W - PAD.r} y1={y(v)} y2={y(v)} class="grid" />
          <text x={PAD.l - 6} y={y(v) + 4} text-anchor="end">
            {fmt(v)}
          </text>
        </g>
      ))}
      <text x={PAD.l} y={H - 6}>
        {tfmt(data.from)}
      </text>
      <text x={W - PAD.r} y={H - 6} text-anchor="end">
        {tfmt(data.to)}
      </text>
      <path d={d} class="line" data-test="history-line" />
      {pts.length === 1 && <circle cx={x(pts[0][0])} cy={y(pts[0][1])} r={3} class="dot" />}
    </svg>
  );
}
