// The Studio's entry point: a hash router (#/library, #/new, #/models/ID, #/models/ID/compare,
// #/keys, #/account, #/signin)
// that renders one page module at a time into <main>.
import { loadSession, signIn, signOut, currentUser, isAuthEnabled, setSignedOutHandler } from "./api.js";
import { $, $$, html, render, toast, confirmDialog, leaveWarning, setLeaveGuard, failure } from "./util.js";
import * as library from "./library.js";
import * as newModel from "./new.js";
import * as modelPage from "./model.js";
import * as keys from "./keys.js";
import * as compare from "./compare.js";
import * as account from "./account.js";

const main = $("#main");
let cleanup = null;   // the current page's stop function (timers, streams)

function showNav(on) {
  $("#nav").hidden = !on;
  const u = currentUser();
  $("#who").textContent = u ? `Signed in as ${u.displayName || u.name}` : "";
  $("#signout").hidden = !isAuthEnabled();
  $('[data-nav="keys"]').hidden = !isAuthEnabled();
  $('[data-nav="account"]').hidden = !isAuthEnabled();
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
      const s = await signIn(f.username.value.trim(), f.password.value);
      // a one-time password: asked for a new one first
      if (s?.user?.mustChangePassword) location.hash = "#/account";
      else location.hash = next && next !== "#/signin" ? next : "#/library";
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      f.password.select();
    }
  });
}

const PAGES = [
  [/^#\/library$/, "library", (view) => library.show(view)],
  [/^#\/new$/, "new", (view) => newModel.show(view)],
  [/^#\/models\/([a-z0-9-]+)$/, "library", (view, m) => modelPage.show(view, m[1])],
  [/^#\/models\/([a-z0-9-]+)\/compare$/, "library", (view, m) => compare.show(view, m[1])],
  [/^#\/keys$/, "keys", (view) => keys.show(view)],
  [/^#\/account$/, "account", (view) => account.show(view)],
];

// Every navigation renders into a fresh view element and gets a number. A page still
// loading when the user navigates on keeps drawing into its own view, now detached, so it
// never draws over the newer page; when it finishes loading its timers are stopped at once.
let navigation = 0;

let shown = null;   // the hash of the page on screen

/** Whether the page on screen may be left: asks when it holds work that is not saved. The
 *  address already changed (a link, Back): it is put back while the user decides, without a
 *  navigation of its own. */
async function mayLeave(target) {
  const why = shown !== null && target !== shown ? leaveWarning() : null;
  if (!why) return true;
  history.replaceState(null, "", shown);
  const leave = await confirmDialog("Leave this page?", why, "Leave and discard", "Stay on this page");
  if (leave) setLeaveGuard(null);
  return leave;
}

async function route() {
  const target = location.hash || "#/library";
  if (!(await mayLeave(target))) return;
  if ((location.hash || "#/library") !== target) { location.hash = target; return; }  // put back while asking
  setLeaveGuard(null);
  shown = target;
  const current = ++navigation;
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  const hash = location.hash || "#/library";
  if (hash === "#/signin") {
    const signedIn = await loadSession();
    if (current !== navigation) return;  // the user navigated on meanwhile
    if (signedIn) { location.hash = "#/library"; return; }
    return signInPage();
  }
  if (!currentUser() && !(await loadSession())) {
    if (current === navigation) location.hash = "#/signin";
    return;
  }
  if (current !== navigation) return;
  showNav(true);
  for (const [re, nav, page] of PAGES) {
    const m = hash.match(re);
    if (!m) continue;
    $$(".nav a").forEach((a) => {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    const view = document.createElement("div");
    main.replaceChildren(view);
    try {
      const stop = (await page(view, m)) || null;
      if (current === navigation) cleanup = stop;
      else if (stop) stop();  // the user navigated away while it loaded
    } catch (e) {
      const words = e.status === 404
        ? "This tuned model was not found: it was deleted, or it is not shared with you. Your models are in My Library."
        : failure(e, "show this page");
      if (current === navigation) render(view, html`<div class="panel notice bad" role="alert">${words}</div>`);
    }
    return;
  }
  location.hash = "#/library";
}

$("#signout").addEventListener("click", async () => {
  if (!(await mayLeave("#/signin"))) return;
  if (cleanup) { cleanup(); cleanup = null; }
  await signOut();
  toast("Signed out");
  location.hash = "#/signin";
});
setSignedOutHandler(() => { if (location.hash !== "#/signin") location.hash = "#/signin"; });
window.addEventListener("hashchange", route);
window.addEventListener("beforeunload", (ev) => { if (leaveWarning()) ev.preventDefault(); });
// "Skip to content" moves the focus to the page's main region; it is not a page address.
$(".skip").addEventListener("click", (ev) => { ev.preventDefault(); main.focus(); });
route();
