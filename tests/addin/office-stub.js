/* A stand-in for Microsoft's office.js, served instead of the CDN file when the
   browser test drives the task pane. It models only what the pane and the send
   handler use: Office.onReady, the mailbox item in read or compose mode
   (getAsFileAsync hands back a fixture EML as base64, as Outlook does), body and
   recipients, sessionData, roamingSettings, the ItemChanged event and
   Office.actions.associate, and requirements.isSetSupported (NestedAppAuth is
   supported unless the test sets naa: false). The test configures it through
   window.__MB_STUB and drives it through window.__mbStub. */
(function () {
  "use strict";
  var cfg = window.__MB_STUB || { mode: "read", item: {} };
  var ok = function (value) { return { status: "succeeded", value: value }; };
  var later = function (cb, r) { setTimeout(function () { cb(r); }, 0); };
  var handlers = {};
  var actions = {};
  var roaming = {};
  var calls = [];

  function recipients(list) {
    return {
      getAsync: function (cb) { later(cb, ok(list || [])); },
    };
  }

  function makeItem(c) {
    if (!c) return null;
    var session = Object.assign({}, c.session || {});
    var it;
    if (c.mode === "compose") {
      var body = c.body_html || "";
      var subject = c.subject || "";
      it = {
        itemType: "message",
        saveAsync: function (cb) { later(cb, ok("draft-id")); },
        body: {
          getAsync: function (type, cb) { later(cb, ok(body)); },
          setAsync: function (html, opts, cb) { body = html; calls.push("body.setAsync"); later(cb, ok()); },
        },
        subject: { getAsync: function (cb) { later(cb, ok(subject)); } },
        to: recipients(c.to), cc: recipients(c.cc), bcc: recipients(c.bcc),
        sessionData: {
          getAsync: function (k, cb) { later(cb, ok(session[k] || "")); },
          setAsync: function (k, v, cb) { session[k] = v; calls.push("sessionData.setAsync:" + k + "=" + v); later(cb, ok()); },
        },
        __body: function () { return body; },
        __session: function () { return session; },
      };
    } else {
      it = {
        itemType: "message",
        internetMessageId: c.internetMessageId,
        subject: c.subject,
        from: c.from, to: c.to || [], cc: c.cc || [],
        getAsFileAsync: function (cb) { calls.push("getAsFileAsync"); later(cb, ok(c.eml_b64)); },
      };
    }
    return it;
  }

  var mailbox = {
    item: makeItem(cfg.item),
    userProfile: { emailAddress: cfg.user || "" },
    addHandlerAsync: function (type, handler, cb) {
      handlers[type] = handler;
      if (cb) later(cb, ok());
    },
  };

  window.Office = {
    AsyncResultStatus: { Succeeded: "succeeded", Failed: "failed" },
    CoercionType: { Html: "html", Text: "text" },
    EventType: { ItemChanged: "olkItemSelectedChanged" },
    context: {
      mailbox: mailbox,
      requirements: {
        isSetSupported: function (name) { return name === "NestedAppAuth" ? cfg.naa !== false : true; },
      },
      roamingSettings: {
        get: function (k) { return roaming[k]; },
        set: function (k, v) { roaming[k] = v; },
        remove: function (k) { delete roaming[k]; },
        saveAsync: function (cb) { if (cb) later(cb, ok()); },
      },
    },
    actions: { associate: function (name, fn) { actions[name] = fn; } },
    onReady: function (cb) {
      var info = { host: "Outlook", platform: "OfficeOnline" };
      return new Promise(function (resolve) {
        setTimeout(function () { if (cb) cb(info); resolve(info); }, 0);
      });
    },
  };

  window.__mbStub = {
    calls: calls,
    actions: actions,
    roaming: roaming,
    item: function () { return mailbox.item; },
    /* Selects another item and fires ItemChanged, as Outlook does for a pinned pane. */
    changeItem: function (c) {
      mailbox.item = makeItem(c);
      var h = handlers[Office.EventType.ItemChanged];
      if (h) h({ type: Office.EventType.ItemChanged });
    },
  };
})();
