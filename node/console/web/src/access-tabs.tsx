// The Access screen's tabs: users and grants (administrators), API
// tokens, enrollment tokens (operators on /devices).

import { session } from "./api";
import { EnrollmentScreen, TokensScreen, UsersScreen } from "./access";
import { hasRole } from "./ops-api";
import { onLinkClick } from "./router";

export function AccessScreen({ loc }: { loc: string }) {
  const u = session()?.user;
  const tabs: [string, string][] = [];
  if (hasRole(u, "admin", "/")) tabs.push(["/users", "Users and grants"]);
  tabs.push(["/tokens", "API tokens"]);
  if (hasRole(u, "operator", "/devices")) tabs.push(["/enrollment", "Enrollment tokens"]);
  return (
    <>
      <nav class="tabs">
        {tabs.map(([to, label]) => (
          <a key={to} href={to} class={loc === to ? "active" : ""} onClick={onLinkClick(to)} data-test={`tab-${to.slice(1)}`}>
            {label}
          </a>
        ))}
      </nav>
      {loc === "/users" ? <UsersScreen /> : loc === "/tokens" ? <TokensScreen /> : <EnrollmentScreen />}
    </>
  );
}
