// "Sign in with Microsoft" on the dashboard (/dashboard/), in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core). Started by
// `cargo test --test dashboard_entra`, which passes:
//   MB_BASE        a server with Entra sign-in configured
//   MB_BASE_PLAIN  a server without Entra
//   MB_USER        the provisioned user
//   MB_ENTRA_TOKEN       a valid Entra access token for MB_USER
//   MB_ENTRA_TOKEN_ZED   a valid token for someone without a mailbeacon account
//   MB_CLIENT_ID, MB_SHOTS
// MSAL is replaced by msal-stub.js (Entra cannot be reached from here); the tokens
// are real RS256 JWTs the server validates. Nothing leaves 127.0.0.1.
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
const GOOD = env("MB_ENTRA_TOKEN");
const ZED = env("MB_ENTRA_TOKEN_ZED");
const CLIENT_ID = env("MB_CLIENT_ID");
const SHOTS = env("MB_SHOTS");
mkdirSync(SHOTS, { recursive: true });
const msalStub = readFileSync(path.join(here, "msal-stub.js"), "utf8");

let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

const browser = await chromium.launch({
  executablePath: process.env.MB_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const failures = [];

async function open(base, msal) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const requests = [];
  const auth = [];
  ctx.on("request", (r) => {
    requests.push(r.url());
    if (r.url().startsWith(base + "/api/")) auth.push(r.headers()["authorization"] || null);
  });
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(base + "/addin/vendor/msal-browser")) {
      return route.fulfill({ contentType: "text/javascript", body: msalStub });
    }
    if (url.startsWith(base)) return route.continue();
    failures.push(`request outside the server: ${url}`);
    return route.abort();
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  await page.addInitScript((m) => { window.__MB_MSAL = m; }, msal || {});
  const res = await page.goto(`${base}/dashboard/`);
  return { ctx, page, requests, auth, res };
}
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
const ann = { username: USER, name: "Ann", homeAccountId: "oid.tid", tenantId: "tid" };
const zed = { username: "zed@contoso.test", name: "Zed", homeAccountId: "oid2.tid", tenantId: "tid" };

try {
  await step("Entra configured: the Microsoft button, and the page may reach the authority", async () => {
    const { ctx, page, res } = await open(BASE, { account: ann, popup: [{ token: GOOD }], silent: [{ token: GOOD }] });
    const csp = res.headers()["content-security-policy"];
    assert.match(csp, /connect-src 'self' https:\/\/login\.microsoftonline\.com(;|$)/, csp);
    await page.locator("#ms-button").waitFor({ state: "visible" });
    assert.equal(await page.locator("#signin").isVisible(), true);
    await shot(page, "dashboard-entra-signin");
    await ctx.close();
  });

  await step("the popup signs in; the dashboard loads with the Entra token, never stored", async () => {
    const { ctx, page, auth } = await open(BASE, { account: ann, popup: [{ token: GOOD }], silent: [{ token: GOOD }] });
    await page.locator("#ms-button").waitFor({ state: "visible" });
    await page.locator("#ms-button").focus();
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => !document.getElementById("main").hidden, null, { timeout: 15000 });
    assert.equal(await text(page, "who"), "Signed in as " + USER);
    const calls = await page.evaluate(() => window.__msalStub.calls);
    const created = calls.find((c) => c.kind === "create-standard");
    assert.ok(created, JSON.stringify(calls));
    assert.equal(created.auth.clientId, CLIENT_ID);
    assert.equal(created.cache.cacheLocation, "memoryStorage");
    assert.equal(created.auth.redirectUri, BASE + "/dashboard/");
    assert.ok(calls.some((c) => c.kind === "popup"), JSON.stringify(calls));
    assert.ok(auth.length > 0 && auth.every((a) => a === "Bearer " + GOOD), JSON.stringify(auth));
    const stored = await page.evaluate(() => JSON.stringify(Object.assign({}, localStorage, sessionStorage)));
    assert.ok(!stored.includes(GOOD.slice(0, 40)), "the Entra token is not stored");
    await page.waitForTimeout(500);
    await shot(page, "dashboard-entra-signedin");
    // Sign out: back to the sign-in card.
    await page.locator("#signout").click();
    await page.locator("#signin").waitFor({ state: "visible" });
    await ctx.close();
  });

  await step("a valid token of someone without an account is told so", async () => {
    const { ctx, page } = await open(BASE, { account: zed, popup: [{ token: ZED }], silent: [{ token: ZED }] });
    await page.locator("#ms-button").waitFor({ state: "visible" });
    await page.locator("#ms-button").click();
    await page.waitForFunction(() => document.getElementById("notice").textContent.length > 0, null, { timeout: 15000 });
    const n = await text(page, "notice");
    assert.match(n, /zed@contoso\.test|account|admin/i, n);
    assert.equal(await page.locator("#main").isVisible(), false);
    assert.equal(await page.locator("#signin").isVisible(), true);
    await ctx.close();
  });

  await step("a blocked popup is explained", async () => {
    const { ctx, page } = await open(BASE, { account: ann, popup: [{ error: "popup_window_error" }] });
    await page.locator("#ms-button").waitFor({ state: "visible" });
    await page.locator("#ms-button").click();
    await page.waitForFunction(() => document.getElementById("notice").textContent.length > 0, null, { timeout: 15000 });
    assert.match(await text(page, "notice"), /Microsoft sign-in did not finish/);
    await ctx.close();
  });

  await step("without Entra: no Microsoft button, MSAL never requested", async () => {
    const { ctx, page, requests, res } = await open(PLAIN, {});
    await page.locator("#signin").waitFor({ state: "visible" });
    await page.waitForTimeout(500);
    assert.equal(await page.locator("#ms-signin").isVisible(), false);
    assert.ok(!requests.some((u) => u.includes("msal-browser")), JSON.stringify(requests));
    assert.ok(!/connect-src/.test(res.headers()["content-security-policy"]));
    await ctx.close();
  });
} catch (e) {
  failures.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`${passed} steps passed`);
