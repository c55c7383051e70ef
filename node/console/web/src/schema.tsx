// A form built from a function's argument schema (JSON Schema): an object
// whose properties are strings, numbers, integers, booleans or enums gets
// one field each; anything else is edited as JSON.

import { useState } from "preact/hooks";
import type { JSONSchema } from "./api";

type Kind = "string" | "number" | "integer" | "boolean" | "enum";

function kindOf(s: JSONSchema): Kind | null {
  if (s.enum && s.enum.every((v) => typeof v === "string" || typeof v === "number")) return "enum";
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
  return t === "string" || t === "number" || t === "integer" || t === "boolean" ? t : null;
}

/** simpleFields returns the fields of a schema the form can show, or null. */
export function simpleFields(s: JSONSchema | undefined): [string, JSONSchema, Kind][] | null {
  if (!s || (s.type !== "object" && !s.properties)) return null;
  const out: [string, JSONSchema, Kind][] = [];
  for (const [name, p] of Object.entries(s.properties ?? {})) {
    const k = kindOf(p);
    if (!k) return null;
    out.push([name, p, k]);
  }
  return out;
}

export interface ArgsState {
  values: Record<string, string | boolean>;
  json: string;
}

export function initialArgs(s: JSONSchema | undefined): ArgsState {
  const values: Record<string, string | boolean> = {};
  for (const [name, p, k] of simpleFields(s) ?? []) {
    if (k === "boolean") values[name] = p.default === true;
    else values[name] = p.default === undefined ? "" : String(p.default);
  }
  return { values, json: "{}" };
}

/** buildArgs turns the form into the call's args, or throws a message. */
export function buildArgs(s: JSONSchema | undefined, st: ArgsState): Record<string, unknown> {
  const fields = simpleFields(s);
  if (!fields) {
    if (!s) return {};
    let v: unknown;
    try {
      v = JSON.parse(st.json || "{}");
    } catch (e) {
      throw new Error(`arguments: not JSON: ${(e as Error).message}`);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("arguments: a JSON object is needed");
    return v as Record<string, unknown>;
  }
  const required = new Set(s?.required ?? []);
  const args: Record<string, unknown> = {};
  for (const [name, p, k] of fields) {
    const raw = st.values[name];
    if (k === "boolean") {
      args[name] = raw === true;
      continue;
    }
    const str = String(raw ?? "").trim();
    if (str === "") {
      if (required.has(name)) throw new Error(`${name} is required`);
      continue;
    }
    if (k === "number" || k === "integer" || (k === "enum" && typeof p.enum?.[0] === "number")) {
      const n = Number(str);
      if (!Number.isFinite(n) || (k === "integer" && !Number.isInteger(n))) throw new Error(`${name}: ${k === "integer" ? "an integer" : "a number"} is needed`);
      if (p.minimum !== undefined && n < p.minimum) throw new Error(`${name}: at least ${p.minimum}`);
      if (p.maximum !== undefined && n > p.maximum) throw new Error(`${name}: at most ${p.maximum}`);
      args[name] = n;
    } else args[name] = str;
  }
  return args;
}

export function ArgsForm({
  schema,
  state,
  onChange,
  idPrefix,
}: {
  schema: JSONSchema | undefined;
  state: ArgsState;
  onChange: (s: ArgsState) => void;
  idPrefix: string;
}) {
  const [fields] = useState(() => simpleFields(schema));
  if (!schema) return null;
  if (!fields) {
    return (
      <label class="field">
        arguments (JSON)
        <textarea
          name={`${idPrefix}-json`}
          rows={3}
          value={state.json}
          onInput={(e) => onChange({ ...state, json: e.currentTarget.value })}
        />
      </label>
    );
  }
  const required = new Set(schema.required ?? []);
  const set = (name: string, v: string | boolean) => onChange({ ...state, values: { ...state.values, [name]: v } });
  return (
    <>
      {fields.map(([name, p, k]) => (
        <label class="field" key={name} title={p.description}>
          {p.title ?? name}
          {required.has(name) && <span class="req">*</span>}
          {k === "boolean" ? (
            <input type="checkbox" name={`${idPrefix}-${name}`} checked={state.values[name] === true} onChange={(e) => set(name, e.currentTarget.checked)} />
          ) : k === "enum" ? (
            <select name={`${idPrefix}-${name}`} value={String(state.values[name])} onChange={(e) => set(name, e.currentTarget.value)}>
              {!required.has(name) && <option value="">—</option>}
              {p.enum!.map((v) => (
                <option key={String(v)} value={String(v)}>
                  {String(v)}
                </option>
              ))}
            </select>
          ) : k === "string" ? (
            <input name={`${idPrefix}-${name}`} type="text" value={String(state.values[name] ?? "")} onInput={(e) => set(name, e.currentTarget.value)} />
          ) : (
            <input
              name={`${idPrefix}-${name}`}
              type="number"
              step={k === "integer" ? 1 : "any"}
              value={String(state.values[name] ?? "")}
              onInput={(e) => set(name, e.currentTarget.value)}
            />
          )}
        </label>
      ))}
    </>
  );
}
