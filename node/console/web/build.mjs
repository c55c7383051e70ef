// Bundles src/ into ../build/app: content-hashed files under assets/, and
// index.html naming them. No inline script or style (the console's
// Content-Security-Policy forbids both).
import * as esbuild from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const out = path.resolve(import.meta.dirname, "../build/app");
await rm(out, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: { main: "src/main.tsx" },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: path.join(out, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
});
const outputs = Object.entries(result.metafile.outputs);
const pick = (ext) => {
  const o = outputs.find(([f, m]) => f.endsWith(ext) && (ext === ".css" || m.entryPoint !== undefined));
  if (!o) throw new Error(`no ${ext} output`);
  return "/assets/" + path.basename(o[0]);
};
const html = (await readFile("index.html", "utf8"))
  .replace("%SCRIPT%", pick(".js"))
  .replace("%STYLE%", pick(".css"));
await mkdir(out, { recursive: true });
await writeFile(path.join(out, "index.html"), html);
await writeFile(path.join(out, "favicon.svg"), await readFile("favicon.svg"));
console.log(`console built in ${path.relative(process.cwd(), out)}`);
