import { useEffect, useState } from "preact/hooks";
import { logout, onSession, session, type Session } from "./api";
import { AccessNav, opsScreen } from "./ops-routes";
import { DeviceScreen } from "./device";
import { DevicesScreen } from "./devices";
import { Login } from "./login";
import { contextPathOf, navigate, onLinkClick, useLocation } from "./router";
import { OverviewScreen } from "./overview";
import { TreeScreen } from "./tree";

export function App() {
  const [s, setS] = useState<Session | null>(session());
  const loc = useLocation();
  useEffect(() => onSession(setS), []);
  // The session ends when the API says so (401) and also, without a
  // request, when its token's expiry passes.
  useEffect(() => {
    if (!s) return;
    const left = Date.parse(s.expires) - Date.now();
    const t = setTimeout(() => logout(), Math.max(0, Math.min(left, 2 ** 31 - 1)));
    return () => clearTimeout(t);
  }, [s]);

  if (!s) return <Login />;
  let screen;
  if (loc === "/device" || loc.startsWith("/device/")) {
    screen = <DeviceScreen path={contextPathOf(loc.slice("/device".length))} />;
  } else if (loc === "/tree" || loc.startsWith("/tree/")) {
    screen = <TreeScreen path={contextPathOf(loc.slice("/tree".length))} />;
  } else if (loc === "/overview") {
    screen = <OverviewScreen />;
  } else if (loc === "/devices") {
    screen = <DevicesScreen />;
  } else if ((screen = opsScreen(loc))) {
    // Jobs, Links, Users, Tokens, Enrollment, Audit, Software.
  } else {
    navigate("/overview");
    return null;
  }
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="/overview" onClick={onLinkClick("/overview")}>
          Strata
        </a>
        <nav>
          <a href="/overview" class={loc === "/overview" ? "active" : ""} onClick={onLinkClick("/overview")}>
            Overview
          </a>
          <a href="/devices" class={loc === "/devices" ? "active" : ""} onClick={onLinkClick("/devices")}>
            Devices
          </a>
          <a href="/tree" class={loc.startsWith("/tree") ? "active" : ""} onClick={onLinkClick("/tree")}>
            Tree
          </a>
          <AccessNav loc={loc} />
        </nav>
        <span class="who" data-test="who">
          {s.user.name}
          {s.user.tenant ? ` (${s.user.tenant})` : ""}
        </span>
        <button type="button" class="link" data-test="logout" onClick={() => logout()}>
          Log out
        </button>
      </header>
      <main>{screen}</main>
    </div>
  );
}
