/* mailbeacon task pane.
   Read mode: tracking status of the open email, Track / Untrack / regarding, and the
   engagement of a followed email. Compose mode: the "Follow this email" switch (read by
   the OnMessageSend handler in launchevent.js). Auto Capture: untracked emails with the
   people on the open email, read live from the user's mailbox, each with a Track button.
   Today: the user's action cards with Dismiss and Snooze; in compose, "Send at the best
   time" shows the suggested time for the draft's recipients.
   Live: the newest events on the user's emails, streamed (live.js) while the pane is
   shown; the open email's engagement counts follow them.
   When the pane is pinned it follows the selected item (ItemChanged). */
(function () {
  "use strict";
  var api = window.MailbeaconApi;
  var $ = function (id) { return document.getElementById(id); };
  var FOLLOW = "mailbeaconFollow";
  var me = null;
  var item = null;
  var activity = null;

  function notice(text, kind) {
    var n = $("notice");
    n.textContent = text || "";
    if (kind) n.setAttribute("data-kind", kind); else n.removeAttribute("data-kind");
  }

  function show(id, on) { $(id).hidden = !on; }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function when(iso) {
    if (!iso) return "—";
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function officeItem() {
    try { return window.Office && Office.context && Office.context.mailbox ? Office.context.mailbox.item : null; }
    catch (e) { return null; }
  }

  /* ---- sign-in ----------------------------------------------------------
     Two ways. A pasted mailbeacon token (self-hosting), kept by api.js as before.
     Or, when the server publishes Entra settings (config.json), "Sign in with
     Microsoft" through MSAL's Nested App Authentication (api.js microsoftSignIn,
     shared with the send handler): silent first, the popup on the button. The
     Microsoft access token stays in memory, never in storage, and is asked for again
     5 minutes before it expires or when the server refuses it (api.js retries the
     call once). */

  var paneConfig = null;
  var ms = null; // api.microsoftSignIn(…) once config.json names Entra settings
  var signedOut = false;

  function loadConfig() {
    if (paneConfig) return Promise.resolve(paneConfig);
    return api.loadConfig("config.json").then(function (c) {
      paneConfig = c;
      if (c.entra && !ms) ms = api.microsoftSignIn(c.entra);
      return c;
    });
  }

  function entraOn() { return !!(paneConfig && paneConfig.entra); }

  function naaSupported() { return api.naaSupported(); }

  function forget() { if (ms) ms.forget(); api.setTokenSource(null); }

  /* The token source for api.js: the one in memory while it has time left, else MSAL's. */
  function msToken(force) {
    return ms.token(force).catch(function (e) {
      forget();
      throw e;
    });
  }

  function msStatus(text) { $("ms-status").textContent = text || ""; }

  var isInteractionRequired = api.isInteractionRequired;

  /* Explains a failed Microsoft sign-in; the token paste stays available. */
  function msFailed(e, silent) {
    var code = (e && e.errorCode) || "";
    forget();
    if (silent && isInteractionRequired(e)) {
      msStatus("Sign in with Microsoft to continue.");
      return;
    }
    msStatus("");
    if (code === "popup_window_error" || code === "empty_window_error") {
      notice("The Microsoft sign-in window was blocked. Allow pop-ups for this add-in, then choose Sign in with Microsoft again.", "error");
    } else if (code === "user_cancelled") {
      notice("Microsoft sign-in was cancelled.");
    } else {
      notice("Microsoft sign-in failed: " + ((e && (e.errorMessage || e.message)) || code || "unknown error") +
        ". You can paste a mailbeacon token instead.", "error");
    }
  }

  function showSignin() {
    me = null;
    show("signin", true); show("app", false); show("signout", false); show("who", false);
    var entra = entraOn();
    var naa = entra && naaSupported();
    show("ms-signin", naa);
    $("token-submit").classList.toggle("primary", !naa);
    $("token-hint").textContent = naa
      ? "Or, if your administrator gave you a mailbeacon API token, paste it here."
      : "Paste the API token your mailbeacon administrator gave you.";
    if (entra && !naa) {
      notice("This version of Outlook cannot sign you in with Microsoft here. Paste a mailbeacon token " +
        "instead (ask your administrator for one).");
    }
    (naa ? $("ms-button") : $("token")).focus();
    return naa;
  }

  function boot() {
    notice("");
    return loadConfig().then(function () {
      if (api.getToken()) return loadMe();
      var naa = showSignin();
      if (naa && !signedOut) return silentSignIn();
    });
  }

  function silentSignIn() {
    msStatus("Signing in with Microsoft…");
    return msToken(false).then(function () {
      msStatus("");
      api.setTokenSource(msToken);
      return loadMe();
    }, function (e) { msFailed(e, true); });
  }

  function popupSignIn() {
    var b = $("ms-button");
    notice("");
    busy(b, true);
    msStatus("Waiting for Microsoft sign-in…");
    return ms.popup().then(function () {
      msStatus("");
      signedOut = false;
      api.setTokenSource(msToken);
      return loadMe();
    }, function (e) { msFailed(e, false); }).then(function () { busy(b, false); });
  }

  /* The server refused the Microsoft token (after one renewal). */
  function entraRefused(res) {
    var err = (res.body && res.body.error) || {};
    var acct = ms && ms.account();
    var who = (acct && acct.username) || "";
    forget();
    showSignin();
    msStatus("");
    if (err.code === "not_provisioned") {
      notice((who ? "You are signed in to Microsoft as " + who + ", but there is no mailbeacon account for it. " +
        "Ask your admin to add " + who + " to mailbeacon." : api.errorText(res)), "error");
    } else {
      notice("mailbeacon did not accept your Microsoft sign-in: " + api.errorText(res), "error");
    }
  }

  function loadMe() {
    return api.call("GET", "/me/settings").then(function (res) {
      if (res.status === 401) {
        if (!api.getToken()) return entraRefused(res);
        return api.setToken(null).then(function () {
          boot();
          notice("That token was not accepted. Check it and sign in again.", "error");
        });
      }
      if (res.status !== 200) { notice(api.errorText(res), "error"); return; }
      me = res.body;
      show("signin", false); show("app", true); show("signout", true);
      $("who").textContent = "Signed in as " + me.email + (api.getToken() ? "" : " with Microsoft");
      show("who", true);
      renderItem();
      loadCards();
      startLive();
    });
  }

  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var t = $("token").value.trim();
    if (!t) return;
    $("token").value = "";
    api.setToken(t).then(boot);
  });

  $("ms-button").addEventListener("click", popupSignIn);

  $("signout").addEventListener("click", function () {
    // Forgets the Microsoft token too, and does not sign in again silently.
    forget();
    signedOut = true;
    stopLive();
    liveLast = null; liveItems = []; renderLive();
    api.setToken(null).then(boot);
  });

  /* ---- the current item --------------------------------------------------- */

  function isCompose(it) { return typeof it.saveAsync === "function"; }

  function renderItem() {
    item = officeItem();
    activity = null;
    show("read", false); show("compose", false); show("capture", false);
    if (!item) {
      if (!window.Office) notice("Open mailbeacon from Outlook to work with an email. (Office.js could not be loaded.)");
      else notice("Select an email to see its tracking status.");
      return;
    }
    if (isCompose(item)) renderCompose(); else renderRead();
  }

  /* ---- read mode ---------------------------------------------------------- */

  function renderRead() {
    show("read", true);
    $("subject").textContent = item.subject || "(no subject)";
    $("reg-id").value = "";
    $("regarding-text").textContent = "";
    show("engagement", false);
    refreshStatus();
    renderCapture();
  }

  function setStatus(state, text) {
    var s = $("status");
    s.setAttribute("data-state", state);
    s.textContent = text;
  }

  function refreshStatus() {
    var mid = item.internetMessageId;
    if (!mid) { setStatus("unknown", "Not sent yet"); return Promise.resolve(); }
    setStatus("unknown", "Checking…");
    return api.call("GET", "/activities?message_id=" + encodeURIComponent(mid)).then(function (res) {
      if (res.status !== 200) { setStatus("unknown", "Unknown"); notice(api.errorText(res), "error"); return; }
      activity = res.body.activity;
      var mine = !!activity;
      if (res.body.tracked && mine) setStatus("tracked", "Tracked");
      else if (res.body.tracked) setStatus("tracked", "Tracked by a colleague");
      else setStatus("untracked", "Not tracked");
      show("track", !res.body.tracked);
      show("untrack", mine);
      show("set-regarding", mine);
      $("set-regarding").textContent = mine && activity.regarding ? "Change regarding" : "Set regarding";
      $("regarding-text").textContent = mine && activity.regarding
        ? "Regarding " + activity.regarding.type + " " + activity.regarding.id : "";
      if (mine && activity.regarding) {
        $("reg-type").value = activity.regarding.type;
        $("reg-id").value = activity.regarding.id;
      }
      if (mine && activity.email_id) loadEngagement(activity.email_id);
      else show("engagement", false);
    });
  }

  function regarding() {
    var id = $("reg-id").value.trim();
    return id ? { type: $("reg-type").value, id: id } : null;
  }

  function busy(button, on) { button.disabled = on; button.setAttribute("aria-busy", on ? "true" : "false"); }

  $("track").addEventListener("click", function () {
    var b = $("track");
    if (!item || typeof item.getAsFileAsync !== "function") {
      notice("This version of Outlook cannot hand the email to add-ins (Mailbox 1.14 is needed).", "error");
      return;
    }
    busy(b, true);
    item.getAsFileAsync(function (r) {
      if (r.status !== Office.AsyncResultStatus.Succeeded) {
        busy(b, false);
        notice("Outlook could not read the email: " + (r.error && r.error.message), "error");
        return;
      }
      var body = { mime: r.value };
      var reg = regarding();
      if (reg) body.regarding = reg;
      api.call("POST", "/activities", body).then(function (res) {
        busy(b, false);
        if (res.status === 201 || res.status === 200) { notice("Tracked in the CRM."); refreshStatus(); }
        else notice(api.errorText(res), "error");
      });
    });
  });

  $("untrack").addEventListener("click", function () {
    if (!activity) return;
    var b = $("untrack");
    busy(b, true);
    api.call("DELETE", "/activities/" + activity.id).then(function (res) {
      busy(b, false);
      if (res.status === 200) { notice("Untracked: the email was removed from the CRM."); refreshStatus(); }
      else notice(api.errorText(res), "error");
    });
  });

  $("set-regarding").addEventListener("click", function () {
    if (!activity) return;
    api.call("PUT", "/activities/" + activity.id + "/regarding", regarding()).then(function (res) {
      if (res.status === 200) { notice("Regarding saved."); refreshStatus(); }
      else notice(api.errorText(res), "error");
    });
  });

  function loadEngagement(emailId) {
    return api.call("GET", "/emails/" + emailId).then(function (res) {
      if (res.status !== 200) { show("engagement", false); return; }
      var rep = res.body;
      var tbody = $("recipients").querySelector("tbody");
      tbody.textContent = "";
      var messageLevel = false;
      rep.recipients.forEach(function (r) {
        if (r.address === "recipient unknown") messageLevel = true;
        var tr = el("tr");
        tr.appendChild(el("td", r.address));
        tr.appendChild(el("td", String(r.opens), "n"));
        tr.appendChild(el("td", String(r.clicks), "n"));
        var last = [r.last_open_at, r.last_click_at].filter(Boolean).sort().pop();
        tr.appendChild(el("td", when(last)));
        tbody.appendChild(tr);
      });
      $("engagement-note").textContent = messageLevel
        ? "Followed from Outlook: one copy went to everyone, so activity is counted for the message as a whole (recipient unknown)."
        : "Each recipient received their own copy.";
      var after = afterSend(rep);
      $("engagement-schedule").textContent = after;
      show("engagement-schedule", after !== "");
      drawChart(rep.timeline || []);
      show("engagement", true);
    });
  }

  /* "Scheduled for 09:00" and "Reminder: no reply by Friday", when the email has them. */
  function afterSend(rep) {
    var parts = [];
    var at = rep.send_at ? new Date(rep.send_at) : null;
    if (rep.state === "scheduled" && at && !isNaN(at)) {
      var today = at.toDateString() === new Date().toDateString();
      var time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      parts.push("Scheduled for " + (today ? time : at.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" }) + " " + time));
    }
    var rem = rep.reminder;
    var by = rem ? new Date(rem.at) : null;
    if (rem && rem.state !== "cancelled" && by && !isNaN(by)) {
      var what = { no_reply: "no reply", not_opened: "not opened", always: "follow up" }[rem.when] || rem.when;
      var day = by.toLocaleDateString([], { weekday: "long" });
      var text = "Reminder: " + what + (rem.when === "always" ? " on " : " by ") + day;
      if (rem.state === "due") text += " (due)";
      if (rem.state === "skipped") text += " (not needed)";
      parts.push(text);
    }
    return parts.join(" · ");
  }

  /* A small bar chart of the timeline: up to 12 buckets, opens and clicks side by side. */
  function drawChart(timeline) {
    var svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var ns = "http://www.w3.org/2000/svg";
    var human = timeline.filter(function (e) { return !e.machine; });
    if (!human.length) {
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", "8"); t.setAttribute("y", "44"); t.setAttribute("font-size", "11");
      t.textContent = "No opens or clicks yet";
      svg.appendChild(t);
      return;
    }
    var times = human.map(function (e) { return Date.parse(e.at); });
    var lo = Math.min.apply(null, times), hi = Math.max.apply(null, times);
    var n = 12, span = Math.max(hi - lo, 1);
    var opens = new Array(n).fill(0), clicks = new Array(n).fill(0);
    human.forEach(function (e, i) {
      var k = Math.min(n - 1, Math.floor((times[i] - lo) / span * n));
      if (e.kind === "open") opens[k]++; else clicks[k]++;
    });
    var max = Math.max.apply(null, opens.concat(clicks).concat([1]));
    var w = 280 / n;
    for (var k = 0; k < n; k++) {
      [[opens[k], "#005eb8", 0], [clicks[k], "#0b6a0b", 1]].forEach(function (b) {
        if (!b[0]) return;
        var h = b[0] / max * 70;
        var r = document.createElementNS(ns, "rect");
        r.setAttribute("x", String(k * w + 2 + b[2] * (w / 2 - 1)));
        r.setAttribute("y", String(76 - h));
        r.setAttribute("width", String(w / 2 - 3));
        r.setAttribute("height", String(h));
        r.setAttribute("fill", b[1]);
        svg.appendChild(r);
      });
    }
    $("chart-cap").textContent = "Opens (blue) and clicks (green) over time: " +
      opens.reduce(function (a, b) { return a + b; }, 0) + " opens, " +
      clicks.reduce(function (a, b) { return a + b; }, 0) + " clicks";
  }

  /* ---- compose mode ------------------------------------------------------- */

  function renderCompose() {
    show("compose", true);
    var sw = $("follow");
    if (me && me.organization && !me.organization.email_engagement) {
      sw.checked = false; sw.disabled = true;
      $("follow-state").textContent = "Email Engagement is switched off by your administrator: emails cannot be followed.";
      return;
    }
    sw.disabled = false;
    if (!item.sessionData) {
      sw.disabled = true;
      $("follow-state").textContent = "This version of Outlook cannot follow emails on send (Mailbox 1.11 is needed).";
      return;
    }
    item.sessionData.getAsync(FOLLOW, function (r) {
      sw.checked = r.status === Office.AsyncResultStatus.Succeeded && r.value === "1";
      followText();
    });
  }

  function followText() {
    $("follow-state").textContent = $("follow").checked
      ? "This email will be followed when you send it (unless a recipient asked not to be tracked: then it is sent untracked)."
      : "This email will not be followed.";
  }

  $("follow").addEventListener("change", function () {
    var on = $("follow").checked;
    item.sessionData.setAsync(FOLLOW, on ? "1" : "", function (r) {
      if (r.status !== Office.AsyncResultStatus.Succeeded) {
        notice("Outlook could not save the switch: " + (r.error && r.error.message), "error");
        $("follow").checked = !on;
      }
      followText();
    });
  });

  /* "Send at the best time": the suggested time for the draft's recipients
     (GET /insights/send-time). The compose view has no send-later control, so the
     pane shows the suggestion (in local time) with each recipient's basis. */
  function draftRecipients() {
    var lists = ["to", "cc", "bcc"].filter(function (k) { return item[k] && item[k].getAsync; });
    return Promise.all(lists.map(function (k) {
      return new Promise(function (resolve) {
        item[k].getAsync(function (r) { resolve(r.status === Office.AsyncResultStatus.Succeeded ? r.value : []); });
      });
    })).then(function (all) {
      var seen = {}, out = [];
      [].concat.apply([], all).forEach(function (p) {
        var a = (p && p.emailAddress || "").toLowerCase();
        if (a && !seen[a]) { seen[a] = true; out.push(a); }
      });
      return out;
    });
  }

  function offset() {
    var m = -new Date().getTimezoneOffset(), a = Math.abs(m);
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (m < 0 ? "-" : "+") + two(Math.floor(a / 60)) + ":" + two(a % 60);
  }

  var BASIS = { recipient: "their own opens", organization: "your recipients' pattern", "default": "working hours" };

  $("best-time").addEventListener("click", function () {
    var b = $("best-time"), msg = $("best-time-msg");
    busy(b, true);
    draftRecipients().then(function (to) {
      if (!to.length) { busy(b, false); msg.textContent = "Add recipients first."; return; }
      return api.call("GET", "/insights/send-time?to=" + encodeURIComponent(to.slice(0, 50).join(",")) +
        "&tz=" + encodeURIComponent(offset())).then(function (res) {
        busy(b, false);
        if (res.status !== 200) { msg.textContent = api.errorText(res); return; }
        var at = new Date(res.body.suggested);
        var why = res.body.recipients.map(function (r) {
          return r.address + ": " + (r.hour < 10 ? "0" : "") + r.hour + ":00 UTC (" + BASIS[r.basis] +
            (r.sample ? ", " + r.sample + " opens" : "") + ")";
        }).join("; ");
        msg.setAttribute("data-suggested", res.body.suggested);
        msg.textContent = "Best time: " + at.toLocaleString([], { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) +
          ". Schedule the send for then. " + why + ".";
      });
    });
  });

  /* ---- Today: the action cards -------------------------------------------- */

  function tomorrowMorning() {
    var d = new Date();
    d.setDate(d.getDate() + 1);
    d.setHours(8, 0, 0, 0);
    return d;
  }

  function loadCards() {
    var ul = $("cards");
    return api.call("GET", "/insights").then(function (res) {
      ul.textContent = "";
      if (res.status !== 200) { $("cards-msg").textContent = api.errorText(res); return; }
      var cards = res.body.cards.slice(0, 5);
      $("cards-msg").textContent = cards.length ? "" : "Nothing needs your attention right now.";
      cards.forEach(function (c) {
        var li = el("li");
        li.setAttribute("data-id", c.id);
        li.setAttribute("data-kind", c.kind);
        var what = el("div", null, "what");
        what.appendChild(el("span", c.title, "title"));
        what.appendChild(el("span", c.detail, "hint"));
        li.appendChild(what);
        var acts = el("div", null, "acts");
        var d = el("button", "Dismiss"), z = el("button", "Snooze until tomorrow");
        d.type = z.type = "button";
        d.setAttribute("aria-label", "Dismiss: " + c.title);
        z.setAttribute("aria-label", "Snooze until tomorrow: " + c.title);
        function act(path, body, done) {
          busy(d, true); busy(z, true);
          api.call("POST", "/insights/" + c.id + path, body).then(function (r) {
            if (r.status !== 200) { busy(d, false); busy(z, false); notice(api.errorText(r), "error"); return; }
            var next = li.nextElementSibling;
            li.parentNode.removeChild(li);
            $("cards-msg").textContent = done;
            if (next) next.querySelector("button").focus();
          });
        }
        d.addEventListener("click", function () { act("/dismiss", undefined, "Dismissed."); });
        z.addEventListener("click", function () {
          act("/snooze", { until: tomorrowMorning().toISOString() }, "Snoozed until tomorrow.");
        });
        acts.appendChild(d); acts.appendChild(z);
        li.appendChild(acts);
        ul.appendChild(li);
      });
    });
  }

  /* ---- Live --------------------------------------------------------------
     GET /api/v1/events through fetch streaming (live.js), while the pane is shown:
     hidden or closed stops it, shown again resumes from the last event seen. The
     five newest events, newest first, with their time relative to now; an event for
     the email whose engagement is shown reloads its counts. */

  var LIVE_MAX = 5;
  var live = null;
  var liveLast = null;
  var liveItems = [];

  function ago(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 45) return "just now";
    var m = Math.round(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.round(m / 60);
    if (h < 24) return h + " h ago";
    return when(new Date(ms).toISOString());
  }

  /* "bob.smith@x" → "Bob Smith"; no recipient, or "recipient unknown" (one copy for
     everyone, followed from Outlook) → "Someone". */
  function who(addr) {
    if (!addr || String(addr).indexOf("@") < 0) return "Someone";
    var local = String(addr).split("@")[0].split("+")[0];
    var words = local.split(/[._-]+/).filter(Boolean).map(function (w) { return w.charAt(0).toUpperCase() + w.slice(1); });
    return words.join(" ") || addr;
  }

  function liveText(e) {
    var d = e.data.data || {};
    var subj = "\u2018" + (d.subject || "(no subject)") + "\u2019";
    switch (e.type) {
      case "email.opened": return who(d.recipient) + " opened " + subj;
      case "email.clicked": return who(d.recipient) + " clicked a link in " + subj;
      case "email.replied": return who(d.recipient) + " replied to " + subj;
      case "email.sent": return "Sent " + subj + (d.recipient ? " to " + d.recipient : "");
      case "email.delivery_failed": return "Not delivered: " + subj + (d.recipient ? " to " + d.recipient : "");
      case "reminder.due": return "Reminder due: " + subj;
      default: return null;
    }
  }

  function renderLive() {
    var ul = $("live-list");
    ul.textContent = "";
    liveItems.forEach(function (it) {
      var li = el("li", null, it.fresh ? "fresh" : "");
      it.fresh = false;
      li.setAttribute("data-type", it.type);
      li.appendChild(el("span", it.text, "what"));
      li.appendChild(el("span", ago(it.at), "ago"));
      ul.appendChild(li);
    });
    show("live-empty", liveItems.length === 0);
  }

  var engagementTimer = null;
  function onLive(e) {
    var text = liveText(e);
    if (!text) return;
    var at = Date.parse(e.data.at);
    liveItems.unshift({ text: text, type: e.type, at: isNaN(at) ? Date.now() : at, fresh: true });
    liveItems = liveItems.slice(0, LIVE_MAX);
    renderLive();
    var emailId = e.data.data && e.data.data.email_id;
    if (activity && activity.email_id && emailId === activity.email_id && !$("engagement").hidden) {
      // Several events in a burst: one reload.
      clearTimeout(engagementTimer);
      engagementTimer = setTimeout(function () { loadEngagement(emailId); }, 200);
    }
  }

  function liveState(st) {
    var d = $("live-state");
    d.setAttribute("data-state", st);
    d.title = { connecting: "Connecting", live: "Live", retrying: "Reconnecting", "signed-out": "Signed out" }[st] || st;
  }

  function startLive() {
    if (live || !me || document.hidden || !window.MailbeaconLive) return;
    live = MailbeaconLive.follow({ bearer: api.bearer, lastId: liveLast, onEvent: onLive, onState: liveState });
  }

  function stopLive() {
    if (!live) return;
    liveLast = live.lastId();
    live.stop();
    live = null;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) stopLive(); else startLive();
  });
  window.addEventListener("pagehide", stopLive);
  setInterval(function () { if (liveItems.length && !document.hidden) renderLive(); }, 30000);

  /* ---- Auto Capture ------------------------------------------------------- */

  function contactsOf(it) {
    var seen = {}, out = [];
    var mine = me && me.email ? me.email.toLowerCase() : "";
    [].concat(it.from ? [it.from] : [], it.to || [], it.cc || []).forEach(function (p) {
      var a = (p && p.emailAddress || "").toLowerCase();
      if (a && a !== mine && !seen[a]) { seen[a] = true; out.push(a); }
    });
    return out;
  }

  function renderCapture() {
    show("capture", true);
    show("mailbox-form", false);
    $("capture-list").textContent = "";
    if (!me.auto_capture_effective) {
      $("capture-msg").textContent = me.organization.auto_capture
        ? "Auto Capture is switched off in your settings."
        : "Auto Capture is switched off for your organization by an administrator.";
      $("contact").disabled = true; $("capture-refresh").disabled = true;
      return;
    }
    $("contact").disabled = false; $("capture-refresh").disabled = false;
    var sel = $("contact");
    sel.textContent = "";
    contactsOf(item).forEach(function (a) { sel.appendChild(el("option", a)); });
    if (sel.options.length) loadCapture();
    else $("capture-msg").textContent = "No other people on this email.";
  }

  function loadCapture() {
    var contact = $("contact").value;
    var list = $("capture-list");
    $("capture-msg").textContent = "Looking in your mailbox…";
    return api.call("GET", "/capture?contact=" + encodeURIComponent(contact)).then(function (res) {
      list.textContent = "";
      if (res.status === 409 && res.body && res.body.error.code === "mailbox_not_connected") {
        $("capture-msg").textContent = "Connect your mailbox to see untracked emails.";
        show("mailbox-form", true);
        return;
      }
      if (res.status !== 200) { $("capture-msg").textContent = api.errorText(res); return; }
      var emails = res.body.emails;
      $("capture-msg").textContent = emails.length
        ? emails.length + " untracked email" + (emails.length === 1 ? "" : "s") + " with " + contact + " in the last " + res.body.days + " days."
        : "No untracked emails with " + contact + " in the last " + res.body.days + " days.";
      emails.forEach(function (m) {
        var li = el("li");
        var what = el("div", null, "what");
        what.appendChild(el("span", m.subject || "(no subject)"));
        what.appendChild(el("span", (m.direction === "outgoing" ? "Sent " : "Received ") + when(m.date), "hint"));
        li.appendChild(what);
        var b = el("button", "Track");
        b.type = "button";
        b.setAttribute("aria-label", "Track " + (m.subject || "email"));
        b.addEventListener("click", function () {
          busy(b, true);
          var body = { folder: m.folder, uid: m.uid };
          var reg = regarding();
          if (reg) body.regarding = reg;
          api.call("POST", "/capture/track", body).then(function (r) {
            if (r.status === 201 || r.status === 200) {
              li.replaceChild(el("span", "Tracked", "pill"), b);
              li.querySelector(".pill").setAttribute("data-state", "tracked");
              if (item && m.message_id && item.internetMessageId &&
                  item.internetMessageId.replace(/[<>]/g, "") === m.message_id) refreshStatus();
            } else { busy(b, false); notice(api.errorText(r), "error"); }
          });
        });
        li.appendChild(b);
        list.appendChild(li);
      });
    });
  }

  $("capture-refresh").addEventListener("click", loadCapture);
  $("contact").addEventListener("change", loadCapture);

  $("mailbox-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = {
      host: $("mb-host").value.trim(), port: Number($("mb-port").value),
      tls: $("mb-tls").value, username: $("mb-user").value, password: $("mb-pass").value,
    };
    $("mb-pass").value = "";
    api.call("PUT", "/mailbox", body).then(function (res) {
      if (res.status === 200) { show("mailbox-form", false); notice("Mailbox connected."); loadCapture(); }
      else notice(api.errorText(res), "error");
    });
  });

  /* ---- start -------------------------------------------------------------- */

  function start() {
    if (window.Office && Office.context && Office.context.mailbox && Office.context.mailbox.addHandlerAsync) {
      // Pinned pane: follow the selected item.
      Office.context.mailbox.addHandlerAsync(Office.EventType.ItemChanged, function () {
        if (me) renderItem();
      });
    }
    boot();
  }

  if (window.Office && typeof Office.onReady === "function") Office.onReady(start);
  else start();
})();
