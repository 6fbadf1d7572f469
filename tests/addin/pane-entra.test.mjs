// "Sign in with Microsoft" in the task pane, in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core). Started by
// `cargo test --test addin_pane_entra`, which runs two servers and passes:
//   MB_BASE        a server with Entra sign-in configured (JWKS file, client id)
//   MB_BASE_PLAIN  a server without Entra
//   MB_USER, MB_TOKEN   the provisioned user and their mailbeacon token (to check results)
//   MB_ENTRA_TOKEN        a valid Entra access token for MB_USER
//   MB_ENTRA_TOKEN_STALE  one the server refuses (signed by another key)
//   MB_ENTRA_TOKEN_ZED    a valid token for someone without a mailbeacon account
//   MB_CLIENT_ID, MB_AUTHORITY, MB_SCOPE   what config.json must say
//   MB_SHOTS       screenshot directory
// office.js is replaced by office-stub.js and MSAL by msal-stub.js (Entra cannot be
// reached from here); the tokens are real RS256 JWTs the server validates. Nothing
// leaves 127.0.0.1. Exits non-zero on the first failed expectation.
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (k) => { const v = process.env[k]; assert.ok(v, `${k} must be set`); return v; };
const BASE = env("MB_BASE");
const PLAIN = env("MB_BASE_PLAIN");
const USER = env("MB_USER");
const TOKEN = env("MB_TOKEN");
const GOOD = env("MB_ENTRA_TOKEN");
const STALE = env("MB_ENTRA_TOKEN_STALE");
const ZED = env("MB_ENTRA_TOKEN_ZED");
const CLIENT_ID = env("MB_CLIENT_ID");
const AUTHORITY = env("MB_AUTHORITY");
const SCOPE = env("MB_SCOPE");
const SHOTS = env("MB_SHOTS");
mkdirSync(SHOTS, { recursive: true });
const officeStub = readFileSync(path.join(here, "office-stub.js"), "utf8");
const msalStub = readFileSync(path.join(here, "msal-stub.js"), "utf8");
const eml = readFileSync(path.join(here, "..", "fixtures", "addin", "read-item.eml"));

let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

const readItem = {
  mode: "read",
  internetMessageId: "<pane-read-1@client.test>",
  subject: "Pane test: question about the renewal",
  from: { emailAddress: "bob@client.test", displayName: "Bob Client" },
  to: [{ emailAddress: USER, displayName: "Ann" }],
  cc: [],
  eml_b64: eml.toString("base64"),
};
const ann = { username: USER, name: "Ann", homeAccountId: "oid.tid", tenantId: "tid" };
const zed = { username: "zed@contoso.test", name: "Zed", homeAccountId: "oid2.tid", tenantId: "tid" };

const browser = await chromium.launch({
  executablePath: process.env.MB_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const failures = [];

/* A fresh browser context (own storage) and page; every request is logged. */
async function open(base, { msal, office = {}, file = "taskpane.html" }) {
  const ctx = await browser.newContext({ viewport: { width: 320, height: 900 } });
  const requests = [];
  const auth = [];
  ctx.on("request", (r) => {
    requests.push(r.url());
    if (r.url().startsWith(base + "/api/")) auth.push(r.headers()["authorization"] || null);
  });
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("https://appsforoffice.microsoft.com/")) {
      return route.fulfill({ contentType: "text/javascript", body: officeStub });
    }
    if (url.startsWith(base + "/addin/vendor/msal-browser")) {
      return route.fulfill({ contentType: "text/javascript", body: msalStub });
    }
    if (url.startsWith(base)) return route.continue();
    return route.abort();
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  await page.addInitScript(([o, m]) => { window.__MB_STUB = o; window.__MB_MSAL = m; },
    [{ user: USER, item: readItem, ...office }, msal || {}]);
  await page.goto(`${base}/addin/${file}`);
  return { ctx, page, requests, auth };
}
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
const msalCalls = (page) => page.evaluate(() => window.__msalStub.calls);
/* The send handler page (commands.html) with a followed draft and no pasted token. */
const followed = (n) => ({
  mode: "compose", subject: `Entra follow ${n}`, to: [{ emailAddress: "bob@client.test" }],
  body_html: `<p>See <a href="https://example.org/e${n}">e${n}</a></p>`, session: { mailbeaconFollow: "1" },
});
const openSend = (base, msal, office = {}, n = 1) =>
  open(base, { msal, office: { item: followed(n), ...office }, file: "commands.html" });
const send = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error("the OnMessageSend handler never called event.completed")), 15000);
  window.__mbStub.actions.onMessageSendHandler({ completed: (r) => { clearTimeout(t); resolve(r); } });
}));
const draft = (page) => page.evaluate(() => window.__mbStub.item().__body());
const UNTRACKED = ' Or switch "Follow this email" off in the mailbeacon pane to send it untracked.';
/* A blocked send: allowEvent false, the exact message, the draft untouched. */
async function blocked(page, n, expected) {
  const r = await send(page);
  assert.equal(r.allowEvent, false, JSON.stringify(r));
  assert.equal(r.errorMessage, "mailbeacon could not follow this email: " + expected + UNTRACKED);
  assert.ok(r.errorMessage.length <= 500, r.errorMessage.length);
  assert.equal(await draft(page), followed(n).body_html);
}

const api = async (method, p) => {
  const r = await fetch(BASE + "/api/v1" + p, { method, headers: { Authorization: "Bearer " + TOKEN } });
  return { status: r.status, body: await r.json().catch(() => null) };
};

try {
  await step("config.json tells the pane how to sign in", async () => {
    const c = await (await fetch(BASE + "/addin/config.json")).json();
    assert.deepEqual(c, { entra: { client_id: CLIENT_ID, authority: AUTHORITY, scopes: [SCOPE] } });
    assert.deepEqual(await (await fetch(PLAIN + "/addin/config.json")).json(), { entra: null });
  });

  await step("(a) silent sign-in; a refused token is renewed once; tracking uses the Entra token", async () => {
    const { ctx, page, auth } = await open(BASE, { msal: { account: ann, silent: [{ token: STALE }, { token: GOOD }] } });
    await page.waitForSelector("#app:not([hidden])");
    await page.waitForFunction((u) => document.getElementById("who").textContent === `Signed in as ${u} with Microsoft`, USER);
    const calls = await msalCalls(page);
    assert.deepEqual(calls[0], { kind: "create", auth: { clientId: CLIENT_ID, authority: AUTHORITY } });
    assert.deepEqual(calls.slice(1).map((c) => [c.kind, c.forceRefresh]), [["silent", false], ["silent", true]]);
    assert.deepEqual(calls[1].scopes, [SCOPE]);
    // Track the open email.
    await page.waitForFunction(() => document.getElementById("status").textContent === "Not tracked");
    await page.locator("#track").focus();
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("status").textContent === "Tracked");
    await shot(page, "signin-entra-signedin");
    // The server linked the Entra identity to the provisioned user: it is the owner.
    const v = await api("GET", "/activities?message_id=pane-read-1@client.test");
    assert.equal(v.status, 200);
    assert.equal(v.body.tracked, true);
    assert.equal(v.body.tracked_by_you, true, JSON.stringify(v.body));
    // Every API call carried an Entra token (the stale one once, then the good one);
    // nothing was stored.
    assert.equal(auth[0], "Bearer " + STALE);
    assert.ok(auth.length > 2 && auth.slice(1).every((a) => a === "Bearer " + GOOD), JSON.stringify(auth.map((a) => a && a.slice(0, 20))));
    const stored = await page.evaluate(() => [localStorage.length, Object.keys(window.__mbStub.roaming).length]);
    assert.deepEqual(stored, [0, 0]);
    // Sign out forgets the token and does not sign in again by itself.
    await page.click("#signout");
    await page.waitForSelector("#ms-button:visible");
    assert.equal((await msalCalls(page)).length, 3);
    await ctx.close();
  });

  await step("(b) silent needs interaction -> the button (keyboard) opens the popup; blocked popup explained", async () => {
    const { ctx, page } = await open(BASE, {
      msal: { account: ann, silent: [{ error: "interaction_required" }], popup: [{ error: "popup_window_error" }, { token: GOOD }] },
    });
    await page.waitForFunction(() => document.getElementById("ms-status").textContent === "Sign in with Microsoft to continue.");
    assert.ok(await page.isVisible("#ms-button"));
    assert.ok(await page.isVisible("#token"), "the token paste stays available");
    assert.equal(await page.evaluate(() => document.activeElement.id), "ms-button");
    await shot(page, "signin-entra");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => /blocked/.test(document.getElementById("notice").textContent));
    assert.match(await text(page, "notice"), /Allow pop-ups/);
    await shot(page, "signin-entra-popup-blocked");
    await page.locator("#ms-button").focus();
    await page.keyboard.press("Enter");
    await page.waitForSelector("#app:not([hidden])");
    assert.equal(await text(page, "who"), `Signed in as ${USER} with Microsoft`);
    assert.deepEqual((await msalCalls(page)).map((c) => c.kind), ["create", "silent", "popup", "popup"]);
    await ctx.close();
  });

  await step("a token close to expiry is renewed silently before it is used", async () => {
    const { ctx, page, auth } = await open(BASE, {
      msal: { account: ann, silent: [{ token: GOOD, expiresIn: 120 }, { token: GOOD }] },
    });
    await page.waitForSelector("#app:not([hidden])");
    // Two minutes left is under the 5-minute margin: asked again, not forced, no 401 first.
    assert.deepEqual((await msalCalls(page)).map((c) => [c.kind, c.forceRefresh]),
      [["create", undefined], ["silent", false], ["silent", false]]);
    assert.ok(auth.every((a) => a === "Bearer " + GOOD));
    await ctx.close();
  });

  await step("(c) a valid token of someone without an account: 'ask your admin'", async () => {
    const { ctx, page } = await open(BASE, { msal: { account: zed, silent: [{ token: ZED }] } });
    await page.waitForFunction(() => /Ask your admin/.test(document.getElementById("notice").textContent));
    assert.equal(await text(page, "notice"),
      "You are signed in to Microsoft as zed@contoso.test, but there is no mailbeacon account for it. " +
      "Ask your admin to add zed@contoso.test to mailbeacon.");
    assert.equal(await page.getAttribute("#notice", "data-kind"), "error");
    assert.ok(await page.isHidden("#app"));
    assert.ok(await page.isVisible("#ms-button"));
    // Not renewed: a fresh token would be refused the same way.
    assert.deepEqual((await msalCalls(page)).map((c) => c.kind), ["create", "silent"]);
    await shot(page, "signin-entra-error");
    await ctx.close();
  });

  await step("(d) Entra not configured: no Microsoft button, MSAL never requested", async () => {
    const { ctx, page, requests } = await open(PLAIN, { msal: {} });
    await page.waitForSelector("#signin:not([hidden])");
    assert.ok(requests.some((u) => u === PLAIN + "/addin/config.json"), requests.join("\n"));
    assert.ok(await page.isHidden("#ms-signin"));
    assert.equal(await page.getAttribute("#token-submit", "class"), "primary");
    await page.locator("#token").fill(TOKEN.replace(/./g, "x"));
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => /not accepted/.test(document.getElementById("notice").textContent));
    assert.equal(await page.evaluate(() => typeof window.msal), "undefined");
    assert.ok(!requests.some((u) => /msal/i.test(u)), requests.join("\n"));
    await shot(page, "signin-plain");
    await ctx.close();
  });

  await step("Outlook without NAA: explained, the token paste works, MSAL never requested", async () => {
    const { ctx, page, requests } = await open(BASE, { msal: {}, office: { naa: false } });
    await page.waitForFunction(() => /cannot sign you in with Microsoft/.test(document.getElementById("notice").textContent));
    assert.ok(await page.isHidden("#ms-signin"));
    await shot(page, "signin-entra-unsupported");
    await page.locator("#token").fill(TOKEN);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#app:not([hidden])");
    assert.equal(await text(page, "who"), `Signed in as ${USER}`);
    assert.ok(!requests.some((u) => /msal/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("OnMessageSend, Microsoft sign-in only: silent NAA token, checked by the server, draft followed", async () => {
    const { ctx, page, auth, requests } = await openSend(BASE, { account: ann, silent: [{ token: GOOD }] });
    assert.equal(await page.evaluate(() => typeof window.msal), "undefined", "MSAL is loaded only on send");
    const r = await send(page);
    assert.deepEqual(r, { allowEvent: true });
    const body = await draft(page);
    assert.match(body, new RegExp(`${BASE.replace(/[.]/g, "\\.")}/o/[^"]+\\.gif`), body);
    assert.ok(body.includes(`${BASE}/c/`), body);
    assert.ok(!body.includes('href="https://example.org/e1"'), body);
    const calls = await msalCalls(page);
    assert.deepEqual(calls[0], { kind: "create", auth: { clientId: CLIENT_ID, authority: AUTHORITY } });
    assert.deepEqual(calls.slice(1).map((c) => [c.kind, c.forceRefresh]), [["silent", false]]);
    assert.deepEqual(calls[1].scopes, [SCOPE]);
    assert.ok(requests.includes(BASE + "/addin/config.json"), requests.join("\n"));
    assert.deepEqual(auth, ["Bearer " + GOOD]);
    // The token stayed in memory.
    const stored = await page.evaluate(() => [localStorage.length, Object.keys(window.__mbStub.roaming).length]);
    assert.deepEqual(stored, [0, 0]);
    await ctx.close();
  });

  await step("OnMessageSend: a refused Microsoft token is renewed once, silently", async () => {
    const { ctx, page, auth } = await openSend(BASE, { account: ann, silent: [{ token: STALE }, { token: GOOD }] }, {}, 2);
    const r = await send(page);
    assert.deepEqual(r, { allowEvent: true });
    assert.ok((await draft(page)).includes(`${BASE}/c/`));
    assert.deepEqual((await msalCalls(page)).map((c) => [c.kind, c.forceRefresh]),
      [["create", undefined], ["silent", false], ["silent", true]]);
    assert.deepEqual(auth, ["Bearer " + STALE, "Bearer " + GOOD]);
    await ctx.close();
  });

  await step("OnMessageSend: silent sign-in fails -> send blocked, 'open the pane and sign in', no popup", async () => {
    const { ctx, page, auth } = await openSend(BASE, { account: ann, silent: [{ error: "interaction_required" }], popup: [{ token: GOOD }] }, {}, 3);
    await blocked(page, 3, "your Microsoft sign-in is needed. Open the mailbeacon pane and sign in with Microsoft, then send again.");
    assert.deepEqual((await msalCalls(page)).map((c) => c.kind), ["create", "silent"]);
    assert.deepEqual(auth, [], "nothing was sent to the API");
    // Other silent failures say what happened and still point to the pane.
    const other = await openSend(BASE, { account: ann, silent: [{ error: "network_error" }] }, {}, 4);
    await blocked(other.page, 4, "Microsoft sign-in failed (stubbed MSAL error: network_error). " +
      "Open the mailbeacon pane and sign in, then send again. If this keeps happening, paste your mailbeacon token in the pane instead.");
    await other.ctx.close();
    await ctx.close();
  });

  await step("OnMessageSend: Outlook without NAA -> blocked, 'paste your token', MSAL never requested", async () => {
    const { ctx, page, requests } = await openSend(BASE, { account: ann, silent: [{ token: GOOD }] }, { naa: false }, 5);
    await blocked(page, 5, "Microsoft sign-in is not available in this Outlook. " +
      "Paste your mailbeacon token in the mailbeacon pane, then send again.");
    assert.ok(!requests.some((u) => /msal/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("OnMessageSend: no page to load MSAL into (classic Outlook's bare runtime) -> 'paste your token'", async () => {
    const { ctx, page, requests } = await openSend(BASE, { account: ann, silent: [{ token: GOOD }] }, {}, 6);
    // The bare JavaScript runtime has no document: hide this page's from api.js.
    await page.evaluate(() => { Object.defineProperty(document, "head", { value: null }); Object.defineProperty(document, "documentElement", { value: null }); });
    await blocked(page, 6, "Microsoft sign-in is not available to the send handler in this Outlook. " +
      "Paste your mailbeacon token in the mailbeacon pane, then send again.");
    assert.ok(!requests.some((u) => /msal/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("OnMessageSend: a Microsoft account without mailbeacon account -> blocked with the server's words, not renewed", async () => {
    const { ctx, page, auth } = await openSend(BASE, { account: zed, silent: [{ token: ZED }] }, {}, 7);
    await blocked(page, 7, "zed@contoso.test has no mailbeacon account; ask an administrator to create it.");
    assert.deepEqual(auth, ["Bearer " + ZED]);
    await ctx.close();
  });

  await step("OnMessageSend: a pasted token (roaming settings) is used first; MSAL never requested", async () => {
    const { ctx, page, auth, requests } = await openSend(BASE, { account: ann, silent: [{ token: GOOD }] }, {}, 9);
    await page.evaluate((t) => { window.__mbStub.roaming.mailbeaconToken = t; }, TOKEN);
    assert.deepEqual(await send(page), { allowEvent: true });
    assert.ok((await draft(page)).includes(`${BASE}/c/`));
    assert.deepEqual(auth, ["Bearer " + TOKEN]);
    assert.ok(!requests.some((u) => /msal|config\.json/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("OnMessageSend in a bare runtime (no api.js, as classic Outlook on Windows): the pasted token alone", async () => {
    const { ctx, page, auth, requests } = await openSend(BASE, { account: ann, silent: [{ token: GOOD }] }, {}, 10);
    await page.evaluate(() => { delete window.MailbeaconApi; });
    await blocked(page, 10, "you have no mailbeacon token in this Outlook, and Microsoft sign-in is not available " +
      "to the send handler here. Paste your mailbeacon token in the mailbeacon pane, then send again.");
    await page.evaluate((t) => { window.__mbStub.roaming.mailbeaconToken = t; }, TOKEN);
    assert.deepEqual(await send(page), { allowEvent: true });
    assert.ok((await draft(page)).includes(`${BASE}/c/`));
    assert.deepEqual(auth, ["Bearer " + TOKEN]);
    assert.ok(!requests.some((u) => /msal|config\.json/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("OnMessageSend without Entra and without a token -> 'paste your mailbeacon token'", async () => {
    const { ctx, page, requests } = await openSend(PLAIN, {}, {}, 8);
    await blocked(page, 8, "you are not signed in to mailbeacon. " +
      "Open the mailbeacon pane and paste your mailbeacon token, then send again.");
    assert.ok(!requests.some((u) => /msal/i.test(u)), requests.join("\n"));
    await ctx.close();
  });

  await step("the real MSAL bundle is served, with its licence", async () => {
    const r = await fetch(BASE + "/addin/vendor/msal-browser-4.30.0.min.js");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /^text\/javascript/);
    assert.match(await r.text(), /^\/\*! @azure\/msal-browser v4\.30\.0/);
    const l = await fetch(BASE + "/addin/vendor/msal-browser.LICENSE.txt");
    assert.match(await l.text(), /MIT License/);
  });
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`${passed} passed, 0 failed`);
