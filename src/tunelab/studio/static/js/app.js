// The Studio's entry point: a hash router (#/library, #/new, #/models/ID, #/keys, #/signin)
// that renders one page module at a time into <main>.
import { loadSession, signIn, signOut, currentUser, isAuthEnabled, setSignedOutHandler } from "./api.js";
import { $, $$, html, render, toast } from "./util.js";
import * as library from "./library.js";
import * as newModel from "./new.js";
import * as modelPage from "./model.js";
import * as keys from "./keys.js";

const main = $("#main");
let cleanup = null;   // the current page's stop function (timers, streams)

function showNav(on) {
  $("#nav").hidden = !on;
  const u = currentUser();
  $("#who").textContent = u ? `Signed in as ${u.displayName || u.name}` : "";
  $("#signout").hidden = !isAuthEnabled();
  $('[data-nav="keys"]').hidden = !isAuthEnabled();
}

function signInPage(next) {
  showNav(false);
  document.title = "Sign in · tunelab Studio";
  render(main, html`
    <section class="panel login">
      <h1>Sign in</h1>
      <p class="sub">Use your tunelab account to tune, watch and try models.</p>
      <form id="signin" novalidate>
        <label class="field">Username
          <input type="text" name="username" autocomplete="username" required autofocus></label>
        <label class="field">Password
          <input type="password" name="password" autocomplete="current-password" required></label>
        <div id="signin-error" class="notice bad" role="alert" hidden></div>
        <button class="btn" type="submit" style="width:100%;justify-content:center">Sign in</button>
      </form>
    </section>`);
  $("#signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const err = $("#signin-error");
    err.hidden = true;
    try {
      await signIn(f.username.value.trim(), f.password.value);
      location.hash = next && next !== "#/signin" ? next : "#/library";
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      f.password.select();
    }
  });
}

const PAGES = [
  [/^#\/library$/, "library", (m) => library.show(main)],
  [/^#\/new$/, "new", () => newModel.show(main)],
  [/^#\/models\/([a-z0-9-]+)$/, "library", (m) => modelPage.show(main, m[1])],
  [/^#\/keys$/, "keys", () => keys.show(main)],
];

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  const hash = location.hash || "#/library";
  if (hash === "#/signin") {
    if (await loadSession()) { location.hash = "#/library"; return; }
    return signInPage();
  }
  if (!currentUser() && !(await loadSession())) {
    location.hash = "#/signin";
    return;
  }
  showNav(true);
  for (const [re, nav, page] of PAGES) {
    const m = hash.match(re);
    if (!m) continue;
    $$(".nav a").forEach((a) => a.toggleAttribute("aria-current", a.dataset.nav === nav));
    $$(".nav a").forEach((a) => { if (a.dataset.nav === nav) a.setAttribute("aria-current", "page"); });
    try {
      cleanup = (await page(m)) || null;
    } catch (e) {
      render(main, html`<div class="panel notice bad" role="alert">${e.message}</div>`);
    }
    return;
  }
  location.hash = "#/library";
}

$("#signout").addEventListener("click", async () => {
  if (cleanup) { cleanup(); cleanup = null; }
  await signOut();
  toast("Signed out");
  location.hash = "#/signin";
});
setSignedOutHandler(() => { if (location.hash !== "#/signin") location.hash = "#/signin"; });
window.addEventListener("hashchange", route);
route();
