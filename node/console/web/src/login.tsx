import { useState } from "preact/hooks";
import { APIError, login } from "./api";

export function Login() {
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await login(user, password);
    } catch (err) {
      setError(err instanceof APIError ? err.message : `cannot reach the node: ${err}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="login">
      <form onSubmit={submit} data-test="login">
        <h1>Strata</h1>
        <label>
          User
          <input name="username" autocomplete="username" value={user} onInput={(e) => setUser(e.currentTarget.value)} required />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
            required
          />
        </label>
        {error && (
          <p class="error" role="alert" data-test="login-error">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Log in
        </button>
      </form>
    </div>
  );
}
