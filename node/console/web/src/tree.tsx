// The Tree screen: lazy browsing of GET /api/v1/tree, one level per
// expansion, paged with "more" (a folder of 100,000 devices loads 200 at a
// time). Mounted peers appear under /peers like any other context.

import { useEffect, useState } from "preact/hooks";
import { APIError, getTree, type TreeNode } from "./api";
import { onLinkClick, routeTo } from "./router";

export function TreeScreen({ path }: { path: string }) {
  return (
    <section class="tree-screen">
      <Breadcrumbs path={path} />
      <Branch path={path} open />
    </section>
  );
}

export function Breadcrumbs({ path, leaf }: { path: string; leaf?: "/device" }) {
  const segs = path.split("/").filter((s) => s !== "");
  const crumbs = [{ label: "/", to: routeTo("/tree", "/") }];
  segs.forEach((s, i) => {
    const p = "/" + segs.slice(0, i + 1).join("/");
    crumbs.push({ label: s, to: i === segs.length - 1 && leaf ? routeTo(leaf, p) : routeTo("/tree", p) });
  });
  return (
    <nav class="crumbs" data-test="crumbs">
      {crumbs.map((c, i) => (
        <span key={c.to}>
          {i > 1 && <span class="sep">/</span>}
          <a href={c.to} onClick={onLinkClick(c.to)}>
            {c.label}
          </a>
        </span>
      ))}
    </nav>
  );
}

function Branch({ path, open }: { path: string; open?: boolean }) {
  const [children, setChildren] = useState<TreeNode[] | null>(null);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(false);

  const load = async (after?: string) => {
    setLoading(true);
    setError("");
    try {
      const t = await getTree(path, after);
      setChildren((prev) => [...(after && prev ? prev : []), ...(t.children ?? [])]);
      setNext(t.next);
    } catch (e) {
      setError(e instanceof APIError ? e.message : String(e));
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    setChildren(null);
    if (open) load();
  }, [path, open]);

  if (!open) return null;
  return (
    <ul class="branch">
      {error && (
        <li class="error" role="alert">
          {error}
        </li>
      )}
      {children === null && !error && <li class="muted">loading…</li>}
      {children?.length === 0 && <li class="muted">empty</li>}
      {children?.map((c) => <Row key={c.path} node={c} />)}
      {next && (
        <li>
          <button type="button" class="link" disabled={loading} onClick={() => load(next)}>
            more…
          </button>
        </li>
      )}
    </ul>
  );
}

function Row({ node }: { node: TreeNode }) {
  const [open, setOpen] = useState(false);
  const isDevice = node.type === "device";
  const to = isDevice ? routeTo("/device", node.path) : routeTo("/tree", node.path);
  const mounted = /^(\/peers\/[^/]+)+$/.test(node.path);
  return (
    <li data-path={node.path}>
      <button
        type="button"
        class="toggle"
        aria-label={open ? "collapse" : "expand"}
        aria-expanded={open}
        onClick={() => setOpen(!open)}
      >
        {open ? "▾" : "▸"}
      </button>
      <a href={to} onClick={onLinkClick(to)} data-test="tree-link">
        {node.name ?? node.path}
      </a>
      <span class={`badge type-${node.type}`}>{node.type}</span>
      {mounted && <span class="badge mounted">peer</span>}
      {node.tenant && <span class="badge tenant">{node.tenant}</span>}
      <Branch path={node.path} open={open} />
    </li>
  );
}
