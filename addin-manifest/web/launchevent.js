/* mailbeacon add-in: the OnMessageSend handler (follow on send).
   If the user switched "Follow this email" on in the task pane (kept in the item's
   session data), the draft's HTML body goes to the server, which answers it with
   a pixel and rewritten links (message-level tracking: Outlook sends one copy to
   everyone). The body is replaced and the send goes on. If that fails, the send
   is stopped with a message (SoftBlock), so the user can retry or switch Follow off. */
(function (global) {
  "use strict";
  var FOLLOW = "mailbeaconFollow";
  /* The server writes its public URL here when it serves this file: classic Outlook
     on Windows runs this file alone (no page, no origin), so the API's address must
     be absolute, and the token comes from the roaming settings. */
  var BASE = "{{PUBLIC_URL}}";
  if (BASE.indexOf("{{") === 0) BASE = "";

  function post(path, body) {
    var token = null;
    try { token = Office.context.roamingSettings.get("mailbeaconToken"); } catch (e) { token = null; }
    if (!token && global.MailbeaconApi) token = global.MailbeaconApi.getToken();
    return fetch(BASE + "/api/v1" + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + (token || "") },
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (b) { return { status: r.status, body: b }; },
        function () { return { status: r.status, body: null }; });
    });
  }

  function errorText(res) {
    var e = res && res.body && res.body.error;
    return e ? e.message : "unexpected answer (HTTP " + res.status + ")";
  }

  function asyncCall(fn) {
    return new Promise(function (resolve, reject) {
      fn(function (r) {
        if (r.status === Office.AsyncResultStatus.Succeeded) resolve(r.value);
        else reject(new Error(r.error ? r.error.message : "Outlook refused the request"));
      });
    });
  }

  function addresses(list) {
    return (list || []).map(function (r) { return r.emailAddress; });
  }

  function followFlag(item) {
    if (!item.sessionData) return Promise.resolve(null);
    return new Promise(function (resolve) {
      item.sessionData.getAsync(FOLLOW, function (r) {
        resolve(r.status === Office.AsyncResultStatus.Succeeded ? r.value : null);
      });
    });
  }

  function onMessageSendHandler(event) {
    var item = Office.context.mailbox.item;
    followFlag(item).then(function (flag) {
      if (flag !== "1") {
        event.completed({ allowEvent: true });
        return null;
      }
      return Promise.all([
        asyncCall(function (cb) { item.body.getAsync(Office.CoercionType.Html, cb); }),
        asyncCall(function (cb) { item.to.getAsync(cb); }),
        asyncCall(function (cb) { item.cc.getAsync(cb); }),
        asyncCall(function (cb) { item.bcc.getAsync(cb); }),
        asyncCall(function (cb) { item.subject.getAsync(cb); }),
      ]).then(function (v) {
        return post("/compose/follow", {
          html: v[0], to: addresses(v[1]), cc: addresses(v[2]), bcc: addresses(v[3]), subject: v[4] || "",
        });
      }).then(function (res) {
        if (res.status !== 201) throw new Error(errorText(res));
        return asyncCall(function (cb) {
          item.body.setAsync(res.body.html, { coercionType: Office.CoercionType.Html }, cb);
        });
      }).then(function () {
        event.completed({ allowEvent: true });
      });
    }).catch(function (e) {
      event.completed({
        allowEvent: false,
        errorMessage: "mailbeacon could not follow this email: " + e.message +
          ". Switch \"Follow this email\" off in the mailbeacon pane to send it untracked.",
      });
    });
  }

  global.onMessageSendHandler = onMessageSendHandler;
  if (global.Office && Office.actions) {
    Office.actions.associate("onMessageSendHandler", onMessageSendHandler);
  }
})(typeof window !== "undefined" ? window : self);
