// API keys: create (the secret is shown once), list, revoke.
import { get, post, del } from "./api.js";
import { html, render, toast, confirmDialog, timeAgo, copyText, within, failure } from "./util.js";

export async function show(main) {
  const [$] = within(main);
  document.title = "API keys · tunelab Studio";
  render(main, html`
    <div class="page-head"><div><h1>API keys</h1>
      <p class="sub">A key lets an app list your models and call them (generateContent). Tuning, editing and deleting need your account (OAuth), not a key.</p></div></div>
    <form class="panel" id="new-key" aria-labelledby="nk-h">
      <h2 id="nk-h">Create a key</h2>
      <div class="row"><label class="field" style="flex:1;margin:0">Name <span class="hint">What the key is for, e.g. "support bot".</span>
        <input type="text" name="name" maxlength="100" required></label>
        <button class="btn" type="submit" id="create-key" style="align-self:flex-end">Create key</button></div>
      <div class="notice bad" id="key-error" role="alert" hidden></div>
      <div id="secret" hidden></div>
    </form>
    <section class="panel" aria-labelledby="kl-h"><h2 id="kl-h">Your keys</h2>
      <div class="notice bad" id="keys-error" role="alert" hidden></div><div id="keys"></div></section>`);

  async function load() {
    const { apiKeys: live = [] } = await get("apiKeys");
    render($("#keys"), live.length ? html`
      <table class="list"><thead><tr><th>Name</th><th>Key</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody>
      ${live.map((k) => html`<tr data-key="${k.name}"><td>${k.displayName || "(no name)"}</td><td data-label="Key" class="mono">…${k.keyHint}</td>
        <td data-label="Created" class="small muted">${timeAgo(k.createTime)}</td><td data-label="Last used" class="small muted">${k.lastUseTime ? timeAgo(k.lastUseTime) : "never"}</td>
        <td><button type="button" class="btn ghost danger small" data-revoke="${k.name}" aria-label="Revoke ${k.displayName || k.name}">Revoke</button></td></tr>`)}
      </tbody></table>` : html`<p class="empty">No keys yet.</p>`);
  }
  // Every call here can fail (a limit reached, the session ended, the server busy): each
  // failure is said on the page, next to what was tried, and nothing typed is lost.
  function say(box, text) {
    $(box).textContent = text || "";
    $(box).hidden = !text;
  }
  $("#new-key").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const displayName = f.name.value.trim();
    if (!displayName) { say("#key-error", "Give the key a name first, e.g. \"support bot\"."); f.name.focus(); return; }
    say("#key-error", "");
    $("#create-key").disabled = true;
    let k;
    try { k = await post("apiKeys", { displayName }); }
    catch (e) {
      say("#key-error", e.metadata.quota_limit === "max_api_keys"
        ? "Could not create the key: you have as many keys as this server allows. Revoke a key you no longer use below, or ask your administrator to raise the limit."
        : e.status === 400 ? `Could not create the key: ${e.message}` : failure(e, "create the key"));
      return;
    } finally { $("#create-key").disabled = false; }
    f.name.value = "";
    const box = $("#secret");
    render(box, html`<div class="notice ok"><b>Copy this key now: it is shown only once.</b></div>
      <div class="row"><div class="secret" id="secret-value" style="flex:1">${k.keyString}</div><button type="button" class="btn ghost small" id="copy-key">Copy</button></div>`);
    box.hidden = false;
    $("#copy-key").addEventListener("click", () => copyText(k.keyString));
    load().catch((e) => say("#keys-error", failure(e, "list your keys")));
  });
  $("#keys").addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-revoke]");
    if (!b) return;
    if (!(await confirmDialog("Revoke this key?", "Apps using it stop working at once. This cannot be undone.", "Revoke", "Keep the key"))) return;
    say("#keys-error", "");
    try { await del(b.dataset.revoke); }
    catch (e) {
      if (e.status !== 404) { say("#keys-error", failure(e, "revoke the key")); return; }
      // already revoked (in another tab, or with the CLI): the list below is brought up to date
    }
    toast("Key revoked");
    load().catch((e) => say("#keys-error", failure(e, "list your keys")));
  });
  await load();
}
