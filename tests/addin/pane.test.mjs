// Drives the mailbeacon task pane in headless Chromium (Debian's /usr/bin/chromium
// through playwright-core), with office.js replaced by tests/addin/office-stub.js.
// Started by `cargo test --test addin_pane`, which runs the server and a private
// Dovecot and passes: MB_BASE (server URL), MB_TOKEN (a user's token), MB_USER,
// MB_SHOTS (screenshot directory). Nothing leaves 127.0.0.1: every other request
// is aborted. Exits non-zero on the first failed expectation.
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = process.env.MB_BASE;
const TOKEN = process.env.MB_TOKEN;
const USER = process.env.MB_USER;
const SHOTS = process.env.MB_SHOTS;
assert.ok(BASE && TOKEN && USER && SHOTS, "MB_BASE, MB_TOKEN, MB_USER and MB_SHOTS must be set");
mkdirSync(SHOTS, { recursive: true });
const stub = readFileSync(path.join(here, "office-stub.js"), "utf8");
const eml = readFileSync(path.join(here, "..", "fixtures", "addin", "read-item.eml"));
const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

const api = async (method, p, body) => {
  const r = await fetch(BASE + "/api/v1" + p, {
    method,
    headers: { Authorization: "Bearer " + TOKEN, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
};

const readItem = {
  mode: "read",
  internetMessageId: "<pane-read-1@client.test>",
  subject: "Pane test: question about the renewal",
  from: { emailAddress: "bob@client.test", displayName: "Bob Client" },
  to: [{ emailAddress: USER, displayName: "Alice" }],
  cc: [{ emailAddress: "carol@client.test", displayName: "Carol" }],
  eml_b64: eml.toString("base64"),
};

const browser = await chromium.launch({
  executablePath: process.env.MB_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const failures = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 320, height: 1000 } });
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("https://appsforoffice.microsoft.com/")) {
      return route.fulfill({ contentType: "text/javascript", body: stub });
    }
    if (url.startsWith(BASE)) return route.continue();
    return route.abort();
  });
  const open = async (cfg, file = "taskpane.html") => {
    const page = await ctx.newPage();
    page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
    await page.addInitScript((c) => { window.__MB_STUB = c; }, { user: USER, item: cfg });
    await page.goto(`${BASE}/addin/${file}`);
    return page;
  };
  const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const statusIs = (page, text) => page.waitForFunction(
    (t) => document.getElementById("status").textContent === t, text, { timeout: 10000 });

  const page = await open(readItem);
  let pixel = null; // the followed email's pixel (read-engagement step)

  await step("sign in with the keyboard", async () => {
    await page.waitForSelector("#signin:not([hidden])");
    await shot(page, "signin");
    await page.locator("#token").fill(TOKEN);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#app:not([hidden])");
  });

  await step("read mode: not tracked, then Track (keyboard) flips the status", async () => {
    await statusIs(page, "Not tracked");
    await page.waitForSelector("#capture-list li");
    await shot(page, "read-untracked");
    await page.selectOption("#reg-type", "opportunity");
    await page.locator("#reg-id").fill("OPP-1");
    await page.locator("#track").focus();
    await page.keyboard.press("Enter");
    await statusIs(page, "Tracked");
    assert.match(await page.textContent("#regarding-text"), /opportunity OPP-1/);
    const v = await api("GET", "/activities?message_id=pane-read-1@client.test");
    assert.equal(v.body.tracked, true);
    assert.equal(v.body.activity.regarding.id, "OPP-1");
    assert.equal(v.body.activity.direction, "incoming");
    assert.ok(await page.isVisible("#untrack"));
    assert.ok(!(await page.isVisible("#track")));
    await shot(page, "read-tracked");
  });

  await step("change regarding, then untrack", async () => {
    await page.selectOption("#reg-type", "account");
    await page.locator("#reg-id").fill("ACME");
    await page.click("#set-regarding");
    await page.waitForFunction(() => /account ACME/.test(document.getElementById("regarding-text").textContent));
    await page.click("#untrack");
    await statusIs(page, "Not tracked");
    const v = await api("GET", "/activities?message_id=pane-read-1@client.test");
    assert.equal(v.body.tracked, false);
  });

  await step("Auto Capture: list with the sender, track one, it leaves the list", async () => {
    assert.equal(await page.inputValue("#contact"), "bob@client.test");
    const subjects = await page.locator("#capture-list li .what span:first-child").allTextContents();
    assert.deepEqual(subjects.map((s) => s.split(" ")[0]),
      ["Capture-Echo", "Capture-Foxtrot", "Capture-Alpha", "Capture-Golf", "Capture-Bravo"]);
    await shot(page, "capture");
    await page.getByRole("button", { name: "Track Capture-Alpha pricing question" }).click();
    await page.locator("#capture-list li", { hasText: "Capture-Alpha" }).locator(".pill").waitFor();
    await page.click("#capture-refresh");
    await page.waitForFunction(() => document.querySelectorAll("#capture-list li").length === 4);
    const after = await page.locator("#capture-list li").allTextContents();
    assert.ok(!after.some((t) => t.includes("Capture-Alpha")), after.join(" | "));
    await shot(page, "capture-tracked");
  });

  await step("pinned pane follows the selected item; engagement of a followed email", async () => {
    const f = await api("POST", "/compose/follow", {
      html: '<p>Our proposal: <a href="https://example.org/proposal">read it</a></p>',
      to: ["bob@client.test"], subject: "Proposal",
    });
    assert.equal(f.status, 201, JSON.stringify(f.body));
    pixel = f.body.html.match(/https?:\/\/[^"]+\/o\/[^"]+\.gif/)[0];
    const link = f.body.html.match(/https?:\/\/[^"]+\/c\/[^"]+/)[0];
    assert.equal((await fetch(pixel, { headers: { "User-Agent": BROWSER_UA } })).status, 200);
    assert.equal((await fetch(link, { headers: { "User-Agent": BROWSER_UA }, redirect: "manual" })).status, 302);
    const rem = await api("PUT", "/emails/" + f.body.email_id + "/reminder", {
      when: "no_reply", at: new Date(Date.now() + 3 * 86400000).toISOString(),
    });
    assert.equal(rem.status, 200, JSON.stringify(rem.body));
    const sent = `From: Alice <${USER}>\r\nTo: bob@client.test\r\nSubject: Proposal\r\nMessage-ID: <pane-sent-1@example.test>\r\n` +
      `MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n${f.body.html}\r\n`;
    await page.evaluate((c) => window.__mbStub.changeItem(c), {
      mode: "read", internetMessageId: "<pane-sent-1@example.test>", subject: "Proposal",
      from: { emailAddress: USER }, to: [{ emailAddress: "bob@client.test" }], cc: [],
      eml_b64: Buffer.from(sent).toString("base64"),
    });
    await page.waitForFunction(() => document.getElementById("subject").textContent === "Proposal");
    await statusIs(page, "Not tracked");
    await page.click("#track");
    await statusIs(page, "Tracked");
    await page.waitForSelector("#engagement:not([hidden])");
    const row = await page.locator("#recipients tbody tr").first().locator("td").allTextContents();
    assert.equal(row[0], "recipient unknown");
    assert.equal(row[1], "1");
    assert.equal(row[2], "1");
    assert.match(await page.textContent("#engagement-note"), /message as a whole/);
    assert.match(await page.textContent("#engagement-schedule"), /^Reminder: no reply by \w+day$/);
    assert.equal(await page.locator("#chart rect").count(), 2);
    await shot(page, "read-engagement");
  });

  await step("live: an open arrives on the stream; the line appears and the count updates", async () => {
    await page.waitForFunction(() => document.getElementById("live-state").dataset.state === "live");
    const before = await page.locator("#live-list li").count();
    assert.equal((await fetch(pixel, { headers: { "User-Agent": BROWSER_UA } })).status, 200);
    await page.waitForFunction((n) => document.querySelectorAll("#live-list li").length === Math.min(n + 1, 5), before,
      { timeout: 10000 });
    const top = await page.locator("#live-list li").first().allTextContents();
    assert.match(top[0], /^Someone opened \u2018Proposal\u2019just now$/, top[0]);
    assert.equal(await page.locator("#live-list li").first().getAttribute("data-type"), "email.opened");
    // The engagement card follows, without reloading the pane.
    await page.waitForFunction(() => {
      const td = document.querySelector("#recipients tbody tr td:nth-child(2)");
      return td && td.textContent === "2";
    }, null, { timeout: 10000 });
    await shot(page, "live");
  });

  await step("live: the SSE parser (split chunks, CRLF, comments, multi-line data)", async () => {
    const got = await page.evaluate(() => {
      const out = [];
      const feed = window.MailbeaconLive.parser((e) => out.push(e));
      [": heartbeat\n\n", "id: evt_1\r", "\nevent: email.opened\r\ndata: {\"a\"", ":1}\r\n\r\n",
        "data: x\ndata: y\n", "\n", "id: evt_3\nevent: e\n\n"].forEach(feed);
      return out;
    });
    assert.deepEqual(got, [
      { id: "evt_1", event: "email.opened", data: '{"a":1}' },
      { id: null, event: "message", data: "x\ny" },
    ]);
  });

  await step("live: hidden pane stops the stream, shown again resumes from the last event", async () => {
    const sse = [];
    page.on("request", (r) => { if (r.url().endsWith("/api/v1/events")) sse.push(r.headers()["last-event-id"] || ""); });
    await page.evaluate(() => {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
      document.dispatchEvent(new Event("visibilitychange"));
    });
    await page.waitForFunction(() => true);
    assert.equal((await fetch(pixel, { headers: { "User-Agent": BROWSER_UA } })).status, 200);
    const n = await page.locator("#live-list li").count();
    await page.evaluate(() => {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
      document.dispatchEvent(new Event("visibilitychange"));
    });
    // The missed open is replayed (Last-Event-ID) and the count reaches 3.
    await page.waitForFunction(() => {
      const td = document.querySelector("#recipients tbody tr td:nth-child(2)");
      return td && td.textContent === "3";
    }, null, { timeout: 10000 });
    assert.equal(sse.length, 1, sse.join(","));
    assert.match(sse[0], /^evt_/);
    assert.equal(await page.locator("#live-list li").count(), Math.min(n + 1, 5));
  });

  await step("Today: cards from the followed email; dismiss with the keyboard, snooze", async () => {
    const today = await open(readItem);
    await today.waitForSelector("#cards li");
    const before = await today.locator("#cards li").evaluateAll((ls) => ls.map((l) => [l.dataset.id, l.dataset.kind]));
    const kinds = before.map((x) => x[1]);
    assert.ok(kinds.includes("email_opened") && kinds.includes("link_clicked"), kinds.join(","));
    await shot(today, "today");
    // Keyboard only: focus the first Dismiss, Enter.
    await today.locator("#cards li").first().getByRole("button", { name: /^Dismiss/ }).focus();
    await today.keyboard.press("Enter");
    await today.waitForFunction((id) => !document.querySelector(`#cards li[data-id="${id}"]`), before[0][0]);
    assert.equal(await today.textContent("#cards-msg"), "Dismissed.");
    await today.locator("#cards li").first().getByRole("button", { name: /^Snooze/ }).click();
    await today.waitForFunction(() => document.getElementById("cards-msg").textContent === "Snoozed until tomorrow.");
    const v = await api("GET", "/insights");
    const left = v.body.cards.map((c) => c.id);
    assert.ok(!left.includes(before[0][0]) && !left.includes(before[1][0]), JSON.stringify(v.body));
    await today.close();
  });

  await step("compose mode: the Follow switch works with the keyboard", async () => {
    const compose = await open({
      mode: "compose", subject: "Proposal v2", to: [{ emailAddress: "bob@client.test" }],
      body_html: '<p>See <a href="https://example.org/v2">v2</a></p>',
    });
    await compose.waitForSelector("#compose:not([hidden])");
    assert.equal(await compose.isChecked("#follow"), false);
    await compose.locator("#follow").focus();
    await compose.keyboard.press("Space");
    await compose.waitForFunction(() => window.__mbStub.item().__session().mailbeaconFollow === "1");
    await compose.waitForFunction(() => /will be followed/.test(document.getElementById("follow-state").textContent));
    assert.equal(await compose.isChecked("#follow"), true);
    assert.ok(!(await compose.isVisible("#read")));
    await shot(compose, "compose");
    // "Send at the best time": the suggestion for the draft's recipients.
    await compose.click("#best-time");
    await compose.waitForFunction(() => /^Best time:/.test(document.getElementById("best-time-msg").textContent));
    const suggested = await compose.getAttribute("#best-time-msg", "data-suggested");
    assert.ok(Date.parse(suggested) > Date.now(), suggested);
    assert.match(await compose.textContent("#best-time-msg"), /bob@client\.test: \d\d:00 UTC/);
    await shot(compose, "compose-best-time");
  });

  await step("OnMessageSend: a followed draft gets the pixel and tracked links", async () => {
    const ev = await open({
      mode: "compose", subject: "Proposal v3", to: [{ emailAddress: "bob@client.test" }],
      body_html: '<p>See <a href="https://example.org/v3">v3</a></p>', session: { mailbeaconFollow: "1" },
    }, "commands.html");
    const result = await ev.evaluate(() => new Promise((resolve) => {
      window.__mbStub.actions.onMessageSendHandler({ completed: resolve });
    }));
    assert.equal(result.allowEvent, true, JSON.stringify(result));
    const body = await ev.evaluate(() => window.__mbStub.item().__body());
    assert.ok(body.includes(`${BASE}/o/`), body);
    assert.ok(body.includes(`${BASE}/c/`), body);
    // Not followed: the draft leaves untouched.
    const plain = await open({
      mode: "compose", subject: "x", to: [{ emailAddress: "bob@client.test" }], body_html: "<p>plain</p>",
    }, "commands.html");
    const r2 = await plain.evaluate(() => new Promise((resolve) => {
      window.__mbStub.actions.onMessageSendHandler({ completed: resolve });
    }));
    assert.equal(r2.allowEvent, true);
    assert.equal(await plain.evaluate(() => window.__mbStub.item().__body()), "<p>plain</p>");
  });

  await step("without office.js the pane degrades with a clear notice", async () => {
    const bare = await ctx.newPage();
    await bare.route("https://appsforoffice.microsoft.com/**", (r) => r.abort());
    await bare.goto(`${BASE}/addin/taskpane.html`);
    await bare.waitForFunction(() => /Open mailbeacon from Outlook/.test(document.getElementById("notice").textContent));
    await shot(bare, "no-office");
  });
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`${passed} passed, 0 failed`);
