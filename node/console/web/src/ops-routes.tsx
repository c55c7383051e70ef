// Routes and navigation entries of the operations screens (and Software). A screen the
// user's grants cannot use has no entry (the node would refuse it).

import { session } from "./api";
import { AccessScreen } from "./access-tabs";
import { AuditScreen } from "./audit";
import { BulkJobScreen } from "./bulk";
import { JobScreen, JobsScreen } from "./jobs";
import { LinksScreen } from "./links";
import { hasRole, isBulkID } from "./ops-api";
import { softwareScreen } from "./releases";
import { onLinkClick } from "./router";

export function opsScreen(loc: string) {
  if (loc === "/jobs") return <JobsScreen />;
  if (loc.startsWith("/jobs/")) {
    let id = loc.slice("/jobs/".length);
    try {
      id = decodeURIComponent(id);
    } catch {
      // Shown as is; the node answers 404.
    }
    return isBulkID(id) ? <BulkJobScreen id={id} /> : <JobScreen id={id} />;
  }
  if (loc === "/links") return <LinksScreen />;
  if (loc === "/audit") return <AuditScreen />;
  if (loc === "/users" || loc === "/tokens" || loc === "/enrollment") return <AccessScreen loc={loc} />;
  return softwareScreen(loc);
}

export function AccessNav({ loc }: { loc: string }) {
  const u = session()?.user;
  const entries: [string, string][] = [["/jobs", "Jobs"]];
  // Releases are node-wide: reading them needs the viewer role on /.
  if (hasRole(u, "viewer", "/")) entries.push(["/releases", "Software"]);
  if (hasRole(u, "viewer", "/peers")) entries.push(["/links", "Links"]);
  entries.push([hasRole(u, "admin", "/") ? "/users" : "/tokens", "Access"]);
  if (hasRole(u, "admin", "/")) entries.push(["/audit", "Audit"]);
  return (
    <>
      {entries.map(([to, label]) => (
        <a
          key={to}
          href={to}
          data-test={`nav-${label.toLowerCase()}`}
          class={loc === to || loc.startsWith(to + "/") || (label === "Access" && ["/users", "/tokens", "/enrollment"].includes(loc)) || (label === "Software" && loc === "/cache") ? "active" : ""}
          onClick={onLinkClick(to)}
        >
          {label}
        </a>
      ))}
    </>
  );
}
