/* mailbeacon add-in: the live event stream (GET /api/v1/events) read with fetch.
   EventSource cannot send the Authorization header, so the pane reads the
   server-sent events from a fetch ReadableStream and parses them here: `id:`,
   `event:` and `data:` lines, an empty line ending an event, `:` lines (the
   server's heartbeats) ignored. After a drop it reconnects with `Last-Event-ID`
   (the server replays what was missed) after a small backoff (1 s doubling to
   30 s, reset once the stream answers); a refused token stops it. The caller
   stops it when the pane is hidden or closed. */
(function (global) {
  "use strict";

  /* A parser: feed(text) with chunks of the stream, onEvent({id, event, data}) per
     complete event (data: the data lines joined with "\n"). */
  function parser(onEvent) {
    var buf = "";
    var cur = { id: null, event: "message", data: [] };
    function line(l) {
      if (l === "") {
        if (cur.data.length) onEvent({ id: cur.id, event: cur.event, data: cur.data.join("\n") });
        cur = { id: null, event: "message", data: [] };
        return;
      }
      if (l.charAt(0) === ":") return; // comment: heartbeat
      var i = l.indexOf(":");
      var field = i < 0 ? l : l.slice(0, i);
      var value = i < 0 ? "" : l.slice(i + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (field === "id") cur.id = value;
      else if (field === "event") cur.event = value;
      else if (field === "data") cur.data.push(value);
    }
    return function feed(text) {
      buf += text;
      var m;
      while ((m = /\r\n|\r|\n/.exec(buf))) {
        // A lone "\r" at the end may be the first half of "\r\n": wait for more.
        if (m[0] === "\r" && m.index === buf.length - 1) break;
        line(buf.slice(0, m.index));
        buf = buf.slice(m.index + m[0].length);
      }
    };
  }

  /* Starts following the stream. opts: bearer() → Promise of a token (or null),
     onEvent(evt) with evt.data parsed as JSON, onState(state) with "connecting",
     "live", "retrying" or "signed-out"; url (default /api/v1/events). Returns
     {stop(), lastId()}. */
  function follow(opts) {
    var url = opts.url || "/api/v1/events";
    var last = opts.lastId || null;
    var stopped = false;
    var ctl = null;
    var timer = null;
    var delay = 1000;
    function state(s) { if (opts.onState) opts.onState(s); }

    function retry() {
      if (stopped) return;
      state("retrying");
      timer = setTimeout(run, delay);
      delay = Math.min(delay * 2, 30000);
    }

    function run() {
      timer = null;
      if (stopped) return;
      state("connecting");
      ctl = typeof AbortController === "function" ? new AbortController() : null;
      Promise.resolve(opts.bearer()).then(function (token) {
        if (stopped) return;
        var headers = { "Accept": "text/event-stream" };
        if (token) headers["Authorization"] = "Bearer " + token;
        if (last) headers["Last-Event-ID"] = last;
        return fetch(url, { headers: headers, cache: "no-store", signal: ctl ? ctl.signal : undefined }).then(function (r) {
          if (r.status === 401 || r.status === 403) { stopped = true; state("signed-out"); return; }
          if (!r.ok || !r.body) { retry(); return; }
          delay = 1000;
          state("live");
          var reader = r.body.getReader();
          var dec = new TextDecoder();
          var feed = parser(function (e) {
            if (e.id) last = e.id;
            var data = null;
            try { data = JSON.parse(e.data); } catch (x) { return; }
            opts.onEvent({ id: e.id, type: e.event, data: data });
          });
          function pump() {
            return reader.read().then(function (c) {
              if (c.done) { retry(); return; }
              feed(dec.decode(c.value, { stream: true }));
              return pump();
            });
          }
          return pump();
        });
      }).catch(function () { if (!stopped) retry(); });
    }

    run();
    return {
      stop: function () {
        stopped = true;
        if (timer) clearTimeout(timer);
        if (ctl) ctl.abort();
      },
      lastId: function () { return last; },
    };
  }

  global.MailbeaconLive = { parser: parser, follow: follow };
})(typeof window !== "undefined" ? window : self);
