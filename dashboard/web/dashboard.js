/* mailbeacon dashboard: KPIs over time (GET /api/v1/stats?interval=…), the top emails
   (GET /api/v1/emails + /insights/emails/{id}) and templates, and the "Today" cards
   (GET /api/v1/insights, dismiss, snooze). Signs in with a pasted token, kept by api.js
   (the pane's API client, same origin). Charts are inline SVG with a text alternative
   (a <title>/<desc> summary, and the numbers as a table). No third-party code. */
(function () {
  "use strict";
  var api = window.MailbeaconApi;
  var $ = function (id) { return document.getElementById(id); };
  var NS = "http://www.w3.org/2000/svg";
  var KINDS = {
    email_opened: "Opened", link_clicked: "Link clicked", email_replied: "Replied",
    reminder_due: "Reminder", no_reply: "No reply yet", contact_quiet: "Gone quiet",
    engagement_spike: "Attention",
  };
  var COLORS = { opened: "#1f5fbf", clicked: "#17804a", replied: "#6d3fc0", open_rate: "#1f5fbf",
    click_rate: "#17804a", click_to_open_rate: "#b26b00" };

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
  function svgEl(tag, attrs) {
    var e = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }
  function pct(x) { return x === null || x === undefined ? "—" : (Math.round(x * 1000) / 10) + "%"; }
  function day(iso) {
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleDateString([], { month: "short", day: "numeric", timeZone: "UTC" });
  }
  function when(iso) {
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function sum(points, key) { return points.reduce(function (a, p) { return a + (p[key] || 0); }, 0); }

  /* ---- sign-in ------------------------------------------------------------ */

  function showSignin() {
    show("signin", true); show("main", false); show("signout", false); show("who", false);
    $("token").focus();
  }

  /* "Sign in with Microsoft" where the pane's Entra sign-in is configured: the
     same api.js code (MSAL's standard client and a popup here, outside Outlook);
     the access token stays in memory. */
  var ms = null;
  api.loadConfig("../addin/config.json").then(function (c) {
    if (!c.entra) return;
    ms = api.microsoftSignIn(c.entra, "../addin/vendor/msal-browser-4.30.0.min.js",
      { standard: true, redirectUri: location.origin + location.pathname });
    show("ms-signin", true);
  });
  $("ms-button").addEventListener("click", function () {
    if (!ms) return;
    notice("");
    ms.popup().then(function () {
      api.setTokenSource(ms.token);
      entraOn = true;
      return boot();
    }, function (e) {
      notice("Microsoft sign-in did not finish: " + ((e && (e.errorMessage || e.message)) || "unknown error"), "error");
    }).then(function () { if (!$("main").hidden) $("main").focus(); });
  });
  var entraOn = false;
  var entraSignedIn = function () { return entraOn; };

  function boot() {
    notice("");
    if (!api.getToken() && !entraSignedIn()) { showSignin(); return Promise.resolve(); }
    return api.call("GET", "/me/settings").then(function (res) {
      if (res.status !== 200 && !api.getToken() && entraSignedIn()) {
        // Signed in with Microsoft, but not someone this server knows.
        api.setTokenSource(null); ms.forget(); entraOn = false;
        showSignin();
        notice(api.errorText(res), "error");
        return;
      }
      if (res.status === 401) {
        return api.setToken(null).then(function () {
          showSignin();
          notice("That token was not accepted. Check it and sign in again.", "error");
        });
      }
      if (res.status !== 200) { notice(api.errorText(res), "error"); return; }
      show("signin", false); show("main", true); show("signout", true);
      $("who").textContent = "Signed in as " + res.body.email;
      show("who", true);
      return loadAll();
    });
  }

  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var t = $("token").value.trim();
    if (!t) return;
    $("token").value = "";
    api.setToken(t).then(boot).then(function () { if (!$("main").hidden) $("main").focus(); });
  });
  $("signout").addEventListener("click", function () {
    if (ms) { ms.forget(); api.setTokenSource(null); entraOn = false; }
    api.setToken(null).then(boot);
  });
  $("days").addEventListener("change", function () { loadStats(); loadTopEmails(); });
  $("interval").addEventListener("change", loadStats);

  function loadAll() { return Promise.all([loadStats(), loadCards(), loadTopEmails()]); }

  /* ---- charts --------------------------------------------------------------- */

  function niceMax(v, percent) {
    if (percent) return Math.min(1, Math.max(0.1, Math.ceil(v * 10) / 10));
    if (v <= 4) return 4;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = [1, 2, 2.5, 5, 10].find(function (f) { return f * p >= v; });
    return m * p;
  }

  /* A line chart of points[key] for each line; null values break the line. */
  function lineChart(box, points, lines, opts) {
    box.textContent = "";
    // Drawn at the box's own width, so labels keep their size on a phone.
    var W = Math.max(280, Math.round(box.clientWidth || 640)), H = W < 500 ? 180 : 220, L = 40, R = 12, T = 12, B = 26;
    var pw = W - L - R, ph = H - T - B;
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": opts.id + "-t " + opts.id + "-d" });
    var title = svgEl("title", { id: opts.id + "-t" }); title.textContent = opts.title;
    var desc = svgEl("desc", { id: opts.id + "-d" }); desc.textContent = opts.summary;
    svg.appendChild(title); svg.appendChild(desc);
    var max = 0;
    points.forEach(function (p) { lines.forEach(function (l) { if (p[l.key] !== null) max = Math.max(max, p[l.key] || 0); }); });
    max = niceMax(max, opts.percent);
    var n = points.length;
    var x = function (i) { return L + (n <= 1 ? pw / 2 : i * pw / (n - 1)); };
    var y = function (v) { return T + ph - (v / max) * ph; };
    [0, 0.5, 1].forEach(function (f) {
      var v = max * f;
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#dde2e8", "stroke-width": 1 }));
      var t = svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
      t.textContent = opts.percent ? Math.round(v * 100) + "%" : String(Math.round(v * 10) / 10);
      svg.appendChild(t);
    });
    var ticks = n <= 1 ? [0] : [0, Math.floor((n - 1) / 2), n - 1];
    ticks.forEach(function (i, k) {
      var t = svgEl("text", { x: x(i), y: H - 8, "text-anchor": k === 0 && n > 1 ? "start" : (k === ticks.length - 1 && n > 1 ? "end" : "middle") });
      t.textContent = points[i] ? day(points[i].start) : "";
      svg.appendChild(t);
    });
    lines.forEach(function (l, li) {
      var d = "", area = "", pen = false, first = null, last = null;
      points.forEach(function (p, i) {
        var v = p[l.key];
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? " L" : " M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        if (first === null) first = i;
        last = i; pen = true;
      });
      if (li === 0 && opts.area && first !== null && !opts.percent) {
        area = d + " L" + x(last).toFixed(1) + " " + y(0) + " L" + x(first).toFixed(1) + " " + y(0) + " Z";
        svg.appendChild(svgEl("path", { d: area, fill: l.color, "fill-opacity": 0.1, stroke: "none" }));
      }
      if (d) svg.appendChild(svgEl("path", { d: d, fill: "none", stroke: l.color, "stroke-width": 2.25, "stroke-linejoin": "round", "stroke-linecap": "round" }));
      if (n <= 62) points.forEach(function (p, i) {
        var v = p[l.key];
        if (v === null || v === undefined || (!opts.percent && !v)) return;
        svg.appendChild(svgEl("circle", { cx: x(i), cy: y(v), r: 2.75, fill: l.color }));
      });
    });
    box.appendChild(svg);
  }

  function legend(id, lines, totals) {
    var lg = $(id);
    lg.textContent = "";
    lines.forEach(function (l) {
      var s = el("span");
      var sw = el("span", null, "sw");
      sw.style.background = l.color;
      s.appendChild(sw);
      s.appendChild(document.createTextNode(l.label + (totals ? ": " + totals[l.key] : "")));
      lg.appendChild(s);
    });
  }

  function spark(points, key, color, percent) {
    var W = 120, H = 28;
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "spark", "aria-hidden": "true", focusable: "false", preserveAspectRatio: "none" });
    var vals = points.map(function (p) { return p[key]; });
    var max = Math.max.apply(null, vals.map(function (v) { return v || 0; }).concat([percent ? 0.01 : 1]));
    var n = vals.length, d = "", pen = false;
    vals.forEach(function (v, i) {
      if (v === null || v === undefined) { pen = false; return; }
      var xx = n <= 1 ? W / 2 : i * W / (n - 1), yy = H - 2 - (v / max) * (H - 4);
      d += (pen ? " L" : " M") + xx.toFixed(1) + " " + yy.toFixed(1);
      pen = true;
    });
    if (d) svg.appendChild(svgEl("path", { d: d, fill: "none", stroke: color, "stroke-width": 1.75 }));
    return svg;
  }

  /* ---- stats ---------------------------------------------------------------- */

  function kpi(label, value, detail, sparkline) {
    var li = el("li", null, "kpi");
    li.appendChild(el("div", label, "label"));
    li.appendChild(el("div", value, "value"));
    li.appendChild(el("div", detail, "detail"));
    if (sparkline) li.appendChild(sparkline);
    return li;
  }

  function loadStats() {
    var days = $("days").value, interval = $("interval").value;
    return api.call("GET", "/stats?days=" + days + "&interval=" + interval).then(function (res) {
      if (res.status !== 200) { notice(api.errorText(res), "error"); return; }
      lastStats = { body: res.body, interval: interval };
      renderStats(res.body, interval);
    });
  }

  var lastStats = null, resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (lastStats) renderStats(lastStats.body, lastStats.interval); }, 150);
  });

  function renderStats(s, interval) {
    {
      var pts = s.series || [];
      var sent = sum(pts, "sent"), replied = sum(pts, "replied");
      var k = $("kpis");
      k.textContent = "";
      k.appendChild(kpi("Sent", String(sent), s.emails + " email" + (s.emails === 1 ? "" : "s") + " followed", spark(pts, "sent", COLORS.opened)));
      k.appendChild(kpi("Open rate", pct(s.open_rate), s.unique_opens + " of " + s.followed + " recipients", spark(pts, "open_rate", COLORS.opened, true)));
      k.appendChild(kpi("Click rate", pct(s.click_rate), s.unique_clicks + " recipients clicked", spark(pts, "click_rate", COLORS.clicked, true)));
      k.appendChild(kpi("Reply rate", pct(s.followed ? replied / s.followed : null), replied + " replied", spark(pts, "reply_rate", COLORS.replied, true)));

      var counts = [
        { key: "opened", label: "Opened", color: COLORS.opened },
        { key: "clicked", label: "Clicked", color: COLORS.clicked },
        { key: "replied", label: "Replied", color: COLORS.replied },
      ];
      var totals = { opened: sum(pts, "opened"), clicked: sum(pts, "clicked"), replied: replied };
      var peak = pts.reduce(function (b, p) { return !b || p.opened > b.opened ? p : b; }, null);
      var per = interval === "week" ? "week" : "day";
      lineChart($("chart-activity"), pts, counts, {
        id: "activity", area: true, title: "Recipients who opened, clicked and replied, per " + per,
        summary: "Over " + pts.length + " " + per + "s: " + totals.opened + " opened, " + totals.clicked +
          " clicked, " + totals.replied + " replied." +
          (peak && peak.opened ? " Most opens in the " + per + " of " + day(peak.start) + " (" + peak.opened + ")." : " No opens yet."),
      });
      legend("legend-activity", counts, totals);
      activityTable(pts);

      var rates = [
        { key: "open_rate", label: "Open rate", color: COLORS.open_rate },
        { key: "click_rate", label: "Click rate", color: COLORS.click_rate },
        { key: "click_to_open_rate", label: "Click-to-open", color: COLORS.click_to_open_rate },
      ];
      lineChart($("chart-rates"), pts, rates, {
        id: "rates", percent: true, title: "Open, click and click-to-open rates per " + per,
        summary: "For the whole period: open rate " + pct(s.open_rate) + ", click rate " + pct(s.click_rate) +
          ", click-to-open " + pct(s.click_to_open_rate) + ". " + per[0].toUpperCase() + per.slice(1) +
          "s without emails have no rate.",
      });
      legend("legend-rates", rates, { open_rate: pct(s.open_rate), click_rate: pct(s.click_rate), click_to_open_rate: pct(s.click_to_open_rate) });
      templates(s.templates || []);
      if (s.truncated) notice("Only the newest emails were counted (" + s.oldest_counted + " and later).");
    }
  }

  function activityTable(pts) {
    var t = $("table-activity");
    t.textContent = "";
    var head = el("tr");
    ["Starting", "Sent", "Opened", "Clicked", "Replied", "Open rate"].forEach(function (h) {
      var th = el("th", h); th.scope = "col"; head.appendChild(th);
    });
    var thead = el("thead"); thead.appendChild(head); t.appendChild(thead);
    var body = el("tbody");
    pts.slice().reverse().forEach(function (p) {
      var tr = el("tr");
      [day(p.start), p.sent, p.opened, p.clicked, p.replied, pct(p.open_rate)].forEach(function (v, i) {
        var c = el(i === 0 ? "th" : "td", String(v)); if (i === 0) c.scope = "row"; tr.appendChild(c);
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
  }

  function rankItem(name, num, meta, fraction) {
    var li = el("li");
    li.appendChild(el("span", name, "name"));
    li.appendChild(el("span", num, "num"));
    var bar = el("div", null, "bar");
    var fill = el("span");
    fill.style.width = Math.max(2, Math.round((fraction || 0) * 100)) + "%";
    bar.appendChild(fill);
    bar.setAttribute("aria-hidden", "true");
    li.appendChild(bar);
    li.appendChild(el("span", meta, "meta"));
    return li;
  }

  function templates(list) {
    var ol = $("top-templates");
    ol.textContent = "";
    var named = list.filter(function (t) { return t.template; })
      .sort(function (a, b) { return (b.open_rate || 0) - (a.open_rate || 0) || b.emails - a.emails; }).slice(0, 5);
    show("top-templates-empty", !named.length);
    named.forEach(function (t) {
      ol.appendChild(rankItem(t.template, pct(t.open_rate), t.emails + " email" + (t.emails === 1 ? "" : "s") +
        " · " + t.followed + " recipients · click rate " + pct(t.click_rate), t.open_rate));
    });
  }

  /* ---- top emails ----------------------------------------------------------- */

  function loadTopEmails() {
    var since = Date.now() - Number($("days").value) * 86400000;
    return api.call("GET", "/emails?limit=20").then(function (res) {
      if (res.status !== 200) return;
      var recent = res.body.emails.filter(function (e) { return Date.parse(e.created_at) >= since; });
      return Promise.all(recent.map(function (e) {
        return api.call("GET", "/insights/emails/" + e.id).then(function (r) {
          return r.status === 200 ? { email: e, score: r.body } : null;
        });
      })).then(function (scored) {
        var top = scored.filter(Boolean).sort(function (a, b) { return b.score.score - a.score.score; }).slice(0, 5);
        var ol = $("top-emails");
        ol.textContent = "";
        show("top-emails-empty", !top.length);
        top.forEach(function (t) {
          var f = {};
          t.score.factors.forEach(function (x) { f[x.name] = x.count; });
          ol.appendChild(rankItem(t.email.subject || "(no subject)", t.score.score + " / 100",
            (f.opens || 0) + " of " + t.email.recipients + " opened · " + (f.clicks || 0) + " clicked · sent " + day(t.email.created_at),
            t.score.score / 100));
        });
      });
    });
  }

  /* ---- Today: the cards ----------------------------------------------------- */

  function tomorrowMorning() {
    var d = new Date();
    d.setDate(d.getDate() + 1);
    d.setHours(8, 0, 0, 0);
    return d;
  }

  function loadCards() {
    return api.call("GET", "/insights").then(function (res) {
      if (res.status !== 200) { notice(api.errorText(res), "error"); return; }
      var ul = $("cards");
      ul.textContent = "";
      var list = res.body.cards;
      list.forEach(function (c, i) {
        var li = cardItem(c);
        if (i >= FIRST_CARDS) li.hidden = true;
        ul.appendChild(li);
      });
      show("cards-empty", !list.length);
      moreButton();
    });
  }

  /* The first cards, then "Show all": the list stays short on a phone. */
  var FIRST_CARDS = 5;
  function moreButton() {
    var hidden = $("cards").querySelectorAll("li[hidden]").length;
    var b = $("cards-more");
    b.hidden = !hidden;
    b.textContent = "Show " + hidden + " more";
  }
  $("cards-more").addEventListener("click", function () {
    var first = $("cards").querySelector("li[hidden]");
    [].forEach.call($("cards").querySelectorAll("li[hidden]"), function (li) { li.hidden = false; });
    moreButton();
    if (first) first.querySelector("button").focus();
  });

  /* After a card leaves, focus goes to the next card's first button (or the heading). */
  function removeCard(li) {
    var next = li.nextElementSibling || li.previousElementSibling;
    li.parentNode.removeChild(li);
    var waiting = $("cards").querySelector("li[hidden]");
    if (waiting && $("cards").querySelectorAll("li:not([hidden])").length < FIRST_CARDS) waiting.hidden = false;
    moreButton();
    if (next && next.hidden) next = null;
    if (next) next.querySelector("button").focus();
    else { show("cards-empty", true); $("today-h").setAttribute("tabindex", "-1"); $("today-h").focus(); }
  }

  function cardItem(c) {
    var li = el("li");
    li.setAttribute("data-kind", c.kind);
    li.setAttribute("data-id", c.id);
    li.appendChild(el("div", (KINDS[c.kind] || c.kind) + " · " + when(c.at), "kind"));
    li.appendChild(el("p", c.title, "title"));
    li.appendChild(el("p", c.detail, "detail"));
    var acts = el("div", null, "acts");
    var dismiss = el("button", "Dismiss");
    dismiss.type = "button";
    dismiss.setAttribute("aria-label", "Dismiss: " + c.title);
    var snooze = el("button", "Snooze until tomorrow");
    snooze.type = "button";
    snooze.setAttribute("aria-label", "Snooze until tomorrow: " + c.title);
    function act(path, body, done) {
      dismiss.disabled = snooze.disabled = true;
      api.call("POST", "/insights/" + c.id + path, body).then(function (res) {
        if (res.status === 200) { notice(done); removeCard(li); }
        else { dismiss.disabled = snooze.disabled = false; notice(api.errorText(res), "error"); }
      });
    }
    dismiss.addEventListener("click", function () { act("/dismiss", undefined, "Dismissed."); });
    snooze.addEventListener("click", function () {
      var until = tomorrowMorning();
      act("/snooze", { until: until.toISOString() }, "Snoozed until " + when(until.toISOString()) + ".");
    });
    acts.appendChild(dismiss);
    acts.appendChild(snooze);
    li.appendChild(acts);
    return li;
  }

  boot();
})();
