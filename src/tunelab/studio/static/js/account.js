// Account: change your password (POST /v1beta/account:changePassword). A user created with a
// one-time password is brought here after signing in, and asked to choose their own.
import { changePassword, currentUser } from "./api.js";
import { html, render, toast, within, failure } from "./util.js";

export async function show(main) {
  const [$] = within(main);
  const user = currentUser() || {};
  const oneTime = Boolean(user.mustChangePassword);
  document.title = "Account · tunelab Studio";
  render(main, html`
    <div class="page-head"><div><h1>Account</h1>
      <p class="sub">Signed in as <b>${user.displayName || user.name}</b>${user.email ? ` (${user.email})` : ""}.</p></div></div>
    <form class="panel narrow" id="password" novalidate aria-labelledby="pw-h">
      <h2 id="pw-h">Change your password</h2>
      ${oneTime ? html`<div class="notice warn" id="one-time" role="status">You signed in with a one-time password, which
        whoever created your account has seen. Choose your own now.</div>` : ""}
      <label class="field">Current password ${oneTime ? html`<span class="hint">The one-time password you signed in with.</span>` : ""}
        <input type="password" name="currentPassword" autocomplete="current-password" required maxlength="1024"></label>
      <div class="notice bad" id="current-error" role="alert" hidden></div>
      <label class="field">New password <span class="hint">At least 8 characters. A few unrelated words make a strong one.</span>
        <input type="password" name="newPassword" autocomplete="new-password" required minlength="8" maxlength="1024"></label>
      <label class="field">New password again
        <input type="password" name="confirm" autocomplete="new-password" required maxlength="1024"></label>
      <div class="notice bad" id="new-error" role="alert" hidden></div>
      <div class="notice bad" id="password-error" role="alert" hidden></div>
      <div class="row"><button class="btn" type="submit" id="change">Change password</button>
        ${oneTime ? html`<a href="#/library" id="later">Later</a>` : ""}</div>
      <p class="hint">You stay signed in here and in your other sessions.</p>
    </form>`);

  const say = (id, text) => { $(id).textContent = text || ""; $(id).hidden = !text; };
  $("#password").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    for (const id of ["#current-error", "#new-error", "#password-error"]) say(id, "");
    if (!f.currentPassword.value) { say("#current-error", "Type your current password."); f.currentPassword.focus(); return; }
    if (f.newPassword.value.length < 8) { say("#new-error", "The new password is too short: use at least 8 characters."); f.newPassword.focus(); return; }
    if (f.newPassword.value !== f.confirm.value) { say("#new-error", "The two new passwords differ: type the same one twice."); f.confirm.select(); return; }
    $("#change").disabled = true;
    try {
      await changePassword(f.currentPassword.value, f.newPassword.value);
    } catch (e) {
      const v = e.violations?.[0];
      if (v?.field === "currentPassword") { say("#current-error", v.description); f.currentPassword.select(); }
      else if (v?.field === "newPassword") { say("#new-error", v.description); f.newPassword.select(); }
      else if (e.status === 429) say("#password-error", `Too many wrong passwords. ${e.message.replace(/^.*?(Try again)/, "$1")}`);
      else say("#password-error", e.status === 400 ? e.message : failure(e, "change the password"));
      return;
    } finally { $("#change").disabled = false; }
    f.currentPassword.value = f.newPassword.value = f.confirm.value = "";
    toast("Password changed");
    if (oneTime) location.hash = "#/library";
  });
  $("#password input[name=currentPassword]").focus();
}
