// API keys: create (the secret is shown once), list, revoke.
import { get, post, del } from "./api.js";
import { html, render, toast, confirmDialog, timeAgo, copyText, within } from "./util.js";

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
        <button class="btn" type="submit" style="align-self:flex-end">Create key</button></div>
      <div id="secret" hidden></div>
    </form>
    <section class="panel" aria-labelledby="kl-h"><h2 id="kl-h">Your keys</h2><div id="keys"></div></section>`);

  async function load() {
    const { apiKeys: live = [] } = await get("apiKeys");
    render($("#keys"), live.length ? html`
      <table class="list"><thead><tr><th>Name</th><th>Key</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody>
      ${live.map((k) => html`<tr data-key="${k.name}"><td>${k.displayName || "(no name)"}</td><td data-label="Key" class="mono">…${k.keyHint}</td>
        <td data-label="Created" class="small muted">${timeAgo(k.createTime)}</td><td data-label="Last used" class="small muted">${k.lastUseTime ? timeAgo(k.lastUseTime) : "never"}</td>
        <td><button type="button" class="btn ghost danger small" data-revoke="${k.name}" aria-label="Revoke ${k.displayName || k.name}">Revoke</button></td></tr>`)}
      </tbody></table>` : html`<p class="empty">No keys yet.</p>`);
  }
  $("#new-key").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const k = await post("apiKeys", { displayName: f.name.value.trim() });
    f.name.value = "";
    const box = $("#secret");
    render(box, html`<div class="notice ok"><b>Copy this key now: it is shown only once.</b></div>
      <div class="row"><div class="secret" id="secret-value" style="flex:1">${k.keyString}</div><button type="button" class="btn ghost small" id="copy-key">Copy</button></div>`);
    box.hidden = false;
    $("#copy-key").addEventListener("click", () => copyText(k.keyString));
    load();
  });
  $("#keys").addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-revoke]");
    if (!b) return;
    if (!(await confirmDialog("Revoke this key?", "Apps using it stop working at once. This cannot be undone.", "Revoke", "Keep the key"))) return;
    await del(b.dataset.revoke);
    toast("Key revoked");
    load();
  });
  await load();
}
