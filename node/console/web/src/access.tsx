// The access screens: users and their grants, API tokens, and device
// enrollment tokens, as the API offers them (docs/api.md, Users, Tokens,
// Devices and enrollment). A created secret is shown once, as the API
// shows it once. Buttons follow the user's grants; the node decides.

import { useEffect, useState } from "preact/hooks";
import { session, type Grant } from "./api";
import {
  createEnrollToken,
  createToken,
  createUser,
  deleteUser,
  fmtTime,
  hasRole,
  listEnrollTokens,
  listTokens,
  listUsers,
  message,
  revokeEnrollToken,
  revokeToken,
  updateUser,
  type APIToken,
  type EnrollToken,
} from "./ops-api";

const roles: Grant["role"][] = ["viewer", "operator", "admin"];

/** useList loads a list and reloads it on demand. */
function useList<T>(load: () => Promise<T[]>, deps: unknown[] = []) {
  const [items, setItems] = useState<T[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (v) => live && (setItems(v), setError("")),
      (e) => live && (setItems([]), setError(message(e))),
    );
    return () => {
      live = false;
    };
  }, [tick, ...deps]);
  return { items, error, reload: () => setTick((n) => n + 1) };
}

/** act runs an action, reporting its failure through setError. */
async function act(setError: (s: string) => void, f: () => Promise<unknown>, then?: () => void) {
  setError("");
  try {
    await f();
    then?.();
  } catch (e) {
    setError(message(e));
  }
}

function Secret({ label, id, secret, onDone }: { label: string; id: string; secret: string; onDone: () => void }) {
  return (
    <div class="secret" data-test="secret" data-id={id} role="status">
      <p>
        {label} <span class="mono">{id}</span>: this secret is shown <strong>once</strong>; copy it now.
      </p>
      <code data-test="secret-value">{secret}</code>
      <button type="button" class="link" onClick={onDone}>
        done
      </button>
    </div>
  );
}

function Err({ text }: { text: string }) {
  return text ? (
    <p class="error" role="alert" data-test="action-error">
      {text}
    </p>
  ) : null;
}

function grantsText(gs?: Grant[]): string {
  return (gs ?? []).map((g) => `${g.role} on ${g.subtree}`).join(", ");
}

export function UsersScreen() {
  const me = session()?.user;
  const canAdmin = hasRole(me, "admin", "/");
  const { items, error, reload } = useList(() => listUsers().then((r) => r.users ?? []));
  const [actionError, setActionError] = useState("");
  const [editing, setEditing] = useState<string | null>(null);
  return (
    <section class="ops users">
      <h1>Users</h1>
      <Err text={error || actionError} />
      {canAdmin && <NewUser onCreated={reload} system={!!me?.system} />}
      <table class="grid" data-test="users">
        <thead>
          <tr>
            <th>name</th>
            <th>tenant</th>
            <th>grants</th>
            <th>state</th>
            <th>created</th>
            {canAdmin && <th />}
          </tr>
        </thead>
        <tbody>
          {items?.map((u) => (
            <tr key={u.name} data-user={u.name}>
              <td>
                {u.name}
                {u.system && <span class="badge">system</span>}
              </td>
              <td>{u.tenant}</td>
              <td>
                {editing === u.name ? (
                  <GrantsEditor
                    grants={u.grants ?? []}
                    onCancel={() => setEditing(null)}
                    onSave={(grants) => act(setActionError, () => updateUser(u.name, { grants }), () => (setEditing(null), reload()))}
                  />
                ) : (
                  grantsText(u.grants)
                )}
              </td>
              <td>{u.disabled ? <span class="error">disabled</span> : "active"}</td>
              <td>{fmtTime(u.created)}</td>
              {canAdmin && (
                <td class="actions">
                  {u.name !== me?.name && (
                    <>
                      <button type="button" class="link" data-test="edit-grants" onClick={() => setEditing(u.name)}>
                        grants
                      </button>
                      <button
                        type="button"
                        class="link"
                        data-test={u.disabled ? "enable-user" : "disable-user"}
                        onClick={() => act(setActionError, () => updateUser(u.name, { disabled: !u.disabled }), reload)}
                      >
                        {u.disabled ? "enable" : "disable"}
                      </button>
                      <button
                        type="button"
                        class="link danger"
                        data-test="delete-user"
                        onClick={() => confirm(`Delete user ${u.name}? Its tokens are revoked.`) && act(setActionError, () => deleteUser(u.name), reload)}
                      >
                        delete
                      </button>
                    </>
                  )}
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function GrantsEditor({ grants, onSave, onCancel }: { grants: Grant[]; onSave: (g: Grant[]) => void; onCancel: () => void }) {
  const [gs, setGs] = useState<Grant[]>(grants);
  return (
    <div class="grants-editor">
      {gs.map((g, i) => (
        <div key={i}>
          <select value={g.role} onChange={(e) => setGs(gs.map((x, j) => (j === i ? { ...x, role: e.currentTarget.value as Grant["role"] } : x)))}>
            {roles.map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
          <input value={g.subtree} onInput={(e) => setGs(gs.map((x, j) => (j === i ? { ...x, subtree: e.currentTarget.value } : x)))} />
          <button type="button" class="link" onClick={() => setGs(gs.filter((_, j) => j !== i))}>
            ✕
          </button>
        </div>
      ))}
      <button type="button" class="link" onClick={() => setGs([...gs, { role: "viewer", subtree: "/" }])}>
        + grant
      </button>
      <button type="button" onClick={() => onSave(gs)}>
        Save
      </button>
      <button type="button" class="link" onClick={onCancel}>
        cancel
      </button>
    </div>
  );
}

function NewUser({ onCreated, system }: { onCreated: () => void; system: boolean }) {
  const [f, setF] = useState({ name: "", password: "", tenant: "", system: false, role: "viewer" as Grant["role"], subtree: "/" });
  const [error, setError] = useState("");
  const [created, setCreated] = useState("");
  const submit = (e: Event) => {
    e.preventDefault();
    act(
      setError,
      async () => {
        const u = await createUser({
          name: f.name,
          password: f.password,
          tenant: f.tenant || undefined,
          system: f.system || undefined,
          grants: f.system ? [] : [{ role: f.role, subtree: f.subtree || "/" }],
        });
        setCreated(u.name);
      },
      () => (setF({ ...f, name: "", password: "" }), onCreated()),
    );
  };
  return (
    <form class="filters" data-test="new-user" onSubmit={submit}>
      <label class="field">
        name
        <input name="name" required value={f.name} onInput={(e) => setF({ ...f, name: e.currentTarget.value })} />
      </label>
      <label class="field">
        password
        <input name="password" type="password" required autocomplete="new-password" value={f.password} onInput={(e) => setF({ ...f, password: e.currentTarget.value })} />
      </label>
      {system && (
        <label class="field">
          tenant
          <input name="tenant" value={f.tenant} onInput={(e) => setF({ ...f, tenant: e.currentTarget.value })} />
        </label>
      )}
      <label class="field">
        role
        <select name="role" value={f.role} onChange={(e) => setF({ ...f, role: e.currentTarget.value as Grant["role"] })}>
          {roles.map((r) => (
            <option key={r}>{r}</option>
          ))}
        </select>
      </label>
      <label class="field">
        on subtree
        <input name="subtree" value={f.subtree} onInput={(e) => setF({ ...f, subtree: e.currentTarget.value })} />
      </label>
      {system && (
        <label class="check">
          <input type="checkbox" name="system" checked={f.system} onChange={(e) => setF({ ...f, system: e.currentTarget.checked })} /> system administrator
        </label>
      )}
      <button type="submit" data-test="create-user">
        Create user
      </button>
      {created && <span class="ok">created {created}</span>}
      <Err text={error} />
    </form>
  );
}

export function TokensScreen() {
  const me = session()?.user;
  const canAdmin = hasRole(me, "admin", "/");
  const [forUser, setForUser] = useState("");
  const [shown, setShown] = useState("");
  const { items, error, reload } = useList<APIToken>(() => listTokens(shown || undefined).then((r) => r.tokens ?? []), [shown]);
  const [actionError, setActionError] = useState("");
  const [f, setF] = useState({ name: "", ttl: "720h" });
  const [secret, setSecret] = useState({ id: "", token: "" });
  const create = (e: Event) => {
    e.preventDefault();
    act(
      setActionError,
      async () => setSecret(await createToken({ user: shown || undefined, name: f.name, ttl: f.ttl || undefined })),
      () => (setF({ ...f, name: "" }), reload()),
    );
  };
  return (
    <section class="ops tokens">
      <h1>API tokens</h1>
      {canAdmin && (
        <form
          class="filters"
          onSubmit={(e) => {
            e.preventDefault();
            setShown(forUser.trim());
          }}
        >
          <label class="field">
            user
            <input name="user" placeholder={`${me?.name ?? ""} (you)`} value={forUser} onInput={(e) => setForUser(e.currentTarget.value)} />
          </label>
          <button type="submit">Show</button>
        </form>
      )}
      <form class="filters" data-test="new-token" onSubmit={create}>
        <label class="field">
          name
          <input name="token-name" required value={f.name} onInput={(e) => setF({ ...f, name: e.currentTarget.value })} />
        </label>
        <label class="field">
          lifetime
          <input name="ttl" value={f.ttl} onInput={(e) => setF({ ...f, ttl: e.currentTarget.value })} />
        </label>
        <button type="submit" data-test="create-token">
          Create token{shown ? ` for ${shown}` : ""}
        </button>
      </form>
      {secret.token && <Secret label="API token" id={secret.id} secret={secret.token} onDone={() => setSecret({ id: "", token: "" })} />}
      <Err text={error || actionError} />
      <table class="grid" data-test="tokens">
        <thead>
          <tr>
            <th>id</th>
            <th>user</th>
            <th>name</th>
            <th>created</th>
            <th>expires</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {items?.map((t) => (
            <tr key={t.id} data-token={t.id}>
              <td class="mono">{t.id}</td>
              <td>{t.user}</td>
              <td>
                {t.name}
                {t.id === session()?.id && <span class="badge">this session</span>}
              </td>
              <td>{fmtTime(t.created)}</td>
              <td>{fmtTime(t.expires)}</td>
              <td>
                {t.revoked ? (
                  <span class="muted">revoked</span>
                ) : (
                  t.id !== session()?.id && (
                    <button type="button" class="link danger" data-test="revoke-token" onClick={() => act(setActionError, () => revokeToken(t.id), reload)}>
                      revoke
                    </button>
                  )
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function EnrollmentScreen() {
  const me = session()?.user;
  const canManage = hasRole(me, "operator", "/devices");
  const { items, error, reload } = useList<EnrollToken>(() => listEnrollTokens().then((r) => r.tokens ?? []));
  const [actionError, setActionError] = useState("");
  const [f, setF] = useState({ group: "", tenant: "", ttl: "168h", uses: "0" });
  const [secret, setSecret] = useState({ id: "", token: "" });
  const create = (e: Event) => {
    e.preventDefault();
    act(
      setActionError,
      async () =>
        setSecret(
          await createEnrollToken({
            group: f.group,
            tenant: f.tenant || undefined,
            ttl: f.ttl || undefined,
            uses: Number(f.uses) || undefined,
          }),
        ),
      () => (setF({ ...f, group: "" }), reload()),
    );
  };
  return (
    <section class="ops enrollment">
      <h1>Enrollment tokens</h1>
      {canManage && (
        <form class="filters" data-test="new-enroll-token" onSubmit={create}>
          <label class="field">
            group
            <input name="group" required value={f.group} onInput={(e) => setF({ ...f, group: e.currentTarget.value })} />
          </label>
          {me?.system && (
            <label class="field">
              tenant
              <input name="tenant" value={f.tenant} onInput={(e) => setF({ ...f, tenant: e.currentTarget.value })} />
            </label>
          )}
          <label class="field">
            lifetime
            <input name="ttl" value={f.ttl} onInput={(e) => setF({ ...f, ttl: e.currentTarget.value })} />
          </label>
          <label class="field">
            uses (0: unlimited)
            <input name="uses" type="number" min="0" value={f.uses} onInput={(e) => setF({ ...f, uses: e.currentTarget.value })} />
          </label>
          <button type="submit" data-test="create-enroll-token">
            Create token
          </button>
        </form>
      )}
      {secret.token && <Secret label="Enrollment token" id={secret.id} secret={secret.token} onDone={() => setSecret({ id: "", token: "" })} />}
      <Err text={error || actionError} />
      <table class="grid" data-test="enroll-tokens">
        <thead>
          <tr>
            <th>id</th>
            <th>group</th>
            <th>tenant</th>
            <th>used</th>
            <th>created</th>
            <th>expires</th>
            {canManage && <th />}
          </tr>
        </thead>
        <tbody>
          {items?.map((t) => (
            <tr key={t.id} data-token={t.id}>
              <td class="mono">{t.id}</td>
              <td>{t.group}</td>
              <td>{t.tenant}</td>
              <td>
                {t.used}
                {t.uses ? ` / ${t.uses}` : ""}
              </td>
              <td>
                {fmtTime(t.created)} {t.created_by && <span class="muted">by {t.created_by}</span>}
              </td>
              <td>{fmtTime(t.expires)}</td>
              {canManage && (
                <td>
                  {t.revoked ? (
                    <span class="muted">revoked</span>
                  ) : (
                    <button type="button" class="link danger" data-test="revoke-enroll-token" onClick={() => act(setActionError, () => revokeEnrollToken(t.id), reload)}>
                      revoke
                    </button>
                  )}
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
