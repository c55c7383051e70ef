// Client-side routes: the node answers index.html for every console path,
// so /tree/devices and /device/peers/eu/devices/pump-12 are bookmarkable.

import { useEffect, useState } from "preact/hooks";

export function navigate(to: string) {
  if (to === location.pathname + location.search) return;
  history.pushState(null, "", to);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function useLocation(): string {
  const [loc, setLoc] = useState(location.pathname);
  useEffect(() => {
    const on = () => setLoc(location.pathname);
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return loc;
}

/** useSearch is the query string of the location ("?path=/x" or ""),
 * kept current on navigate and on back/forward. */
export function useSearch(): string {
  const [s, setS] = useState(location.search);
  useEffect(() => {
    const on = () => setS(location.search);
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return s;
}

/** contextPathOf turns the rest of a route ("/devices/pump-12" after
 * "/device") back into a context path, segment by segment. */
export function contextPathOf(rest: string): string {
  const segs = rest.split("/").filter((s) => s !== "");
  try {
    return "/" + segs.map(decodeURIComponent).join("/");
  } catch {
    return "/";
  }
}

export function routeTo(prefix: "/tree" | "/device", contextPath: string): string {
  const segs = contextPath.split("/").filter((s) => s !== "");
  return segs.length === 0 ? prefix : `${prefix}/${segs.map(encodeURIComponent).join("/")}`;
}

/** Link navigates without reloading the page. */
export function onLinkClick(to: string) {
  return (e: MouseEvent) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
}
