// Drives the mailbeacon dashboard (/dashboard/) in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core). Started by `cargo test --test dashboard`,
// which runs the server with a user's followed, opened and clicked emails and passes
// MB_BASE, MB_TOKEN and MB_SHOTS. Nothing leaves 127.0.0.1: every other request is
// aborted (and counted as a failure: the dashboard loads nothing from elsewhere).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.MB_BASE;
const TOKEN = process.env.MB_TOKEN;
const SHOTS = process.env.MB_SHOTS;
assert.ok(BASE && TOKEN && SHOTS, "MB_BASE, MB_TOKEN and MB_SHOTS must be set");
mkdirSync(SHOTS, { recursive: true });

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
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(BASE)) return route.continue();
    failures.push(`request outside the server: ${url}`);
    return route.abort();
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") failures.push(`console: ${m.text()}`); });
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

  await step("sign in by pasting a token (keyboard)", async () => {
    await page.goto(`${BASE}/dashboard/`);
    await page.waitForSelector("#signin:not([hidden])");
    assert.equal(await page.evaluate(() => document.activeElement.id), "token");
    await shot("dashboard-signin-1280");
    await page.keyboard.type(TOKEN);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#main:not([hidden])");
    assert.match(await page.textContent("#who"), /ann@sales\.test/);
  });

  await step("KPIs, charts with text alternatives, top emails and templates", async () => {
    await page.waitForSelector("#kpis li");
    const kpis = await page.locator("#kpis li .label").allTextContents();
    assert.deepEqual(kpis, ["Sent", "Open rate", "Click rate", "Reply rate"]);
    const values = await page.locator("#kpis li .value").allTextContents();
    assert.equal(values[0], "12"); // 4 emails × 3 recipients
    // 1 + 2 + 3 + 1 recipients opened out of 12.
    assert.equal(values[1], "58.3%");
    await page.waitForSelector("#chart-activity svg path");
    const desc = await page.textContent("#activity-d");
    assert.match(desc, /7 opened, 4 clicked, 0 replied/);
    const label = await page.getAttribute("#chart-activity svg", "aria-labelledby");
    assert.equal(label, "activity-t activity-d");
    assert.equal(await page.locator("#chart-rates svg path").count() >= 1, true);
    // The numbers as a table too.
    await page.click("#main details summary");
    assert.equal(await page.locator("#table-activity tbody tr").count(), 31);
    await page.waitForSelector("#top-emails li");
    assert.equal(await page.locator("#top-emails li").count(), 4);
    const templates = await page.locator("#top-templates li .name").allTextContents();
    assert.deepEqual(templates, ["Renewal", "Spring offer", "Webinar"]);
    // Week buckets.
    await page.selectOption("#interval", "week");
    await page.waitForFunction(() => /over \d+ weeks/i.test(document.getElementById("activity-d").textContent));
    await page.selectOption("#interval", "day");
    await page.waitForFunction(() => /over 31 days/i.test(document.getElementById("activity-d").textContent));
  });

  let before = 0;
  await step("Today: the cards; every control is a button", async () => {
    await page.waitForSelector("#cards li");
    before = await page.locator("#cards li").count();
    assert.ok(before >= 5, `cards: ${before}`);
    const kinds = await page.locator("#cards li").evaluateAll((ls) => ls.map((l) => l.dataset.kind));
    assert.ok(kinds.includes("email_opened") && kinds.includes("link_clicked"), kinds.join(","));
    const tags = await page.locator("#cards li .acts > *").evaluateAll((es) => es.map((e) => e.tagName));
    assert.ok(tags.every((t) => t === "BUTTON"));
    // The first five, then "Show N more".
    assert.equal(await page.locator("#cards li:not([hidden])").count(), Math.min(before, 5));
    if (before > 5) {
      assert.equal(await page.textContent("#cards-more"), `Show ${before - 5} more`);
    }
    await shot("dashboard-1280");
  });

  await step("360 px: one column, nothing wider than the screen", async () => {
    await page.setViewportSize({ width: 360, height: 800 });
    await page.waitForTimeout(100);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    const wide = await page.evaluate(() => [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > 361 && !e.closest(".table-wrap"))
      .slice(0, 5).map((e) => e.tagName + "#" + e.id + "." + e.className));
    assert.ok(overflow <= 360, `page is ${overflow} px wide at 360: ${wide.join(", ")}`);
    await shot("dashboard-360");
  });

  await step("keyboard only: Tab to a card's Dismiss, Enter; focus moves on; it stays gone", async () => {
    const firstId = await page.locator("#cards li").first().getAttribute("data-id");
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.locator("#main").focus();
    let found = false;
    for (let i = 0; i < 40 && !found; i++) {
      await page.keyboard.press("Tab");
      found = await page.evaluate(() => {
        const a = document.activeElement;
        return !!a && a.tagName === "BUTTON" && a.textContent === "Dismiss" && !!a.closest("#cards li");
      });
    }
    assert.ok(found, "Tab never reached a Dismiss button");
    const style = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(style, "none", "focus must be visible");
    const target = await page.evaluate(() => document.activeElement.closest("li").dataset.id);
    assert.equal(target, firstId);
    await page.keyboard.press("Enter");
    await page.waitForFunction((id) => !document.querySelector(`#cards li[data-id="${id}"]`), target);
    assert.equal(await page.locator("#cards li").count(), before - 1);
    assert.equal(await page.evaluate(() => document.activeElement.tagName), "BUTTON");
    await page.waitForFunction(() => document.getElementById("notice").textContent === "Dismissed.");
    await shot("dashboard-dismissed-360");
    await page.reload();
    await page.waitForSelector("#cards li");
    const ids = await page.locator("#cards li").evaluateAll((ls) => ls.map((l) => l.dataset.id));
    assert.ok(!ids.includes(target), "a dismissed card came back");
  });
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`${passed} passed, 0 failed`);
