/* mailbeacon add-in: the OnMessageSend handler (follow on send).
   If the user switched "Follow this email" on in the task pane (kept in the item's
   session data), the draft's HTML body goes to the server, which answers it with
   a pixel and rewritten links (message-level tracking: Outlook sends one copy to
   everyone). The body is replaced and the send goes on.

   Who the user is: the mailbeacon token pasted in the pane (roaming settings) when
   there is one. Else, when the server publishes Entra settings (config.json) and
   Outlook brokers Nested App Authentication, a Microsoft access token acquired
   silently through MSAL (api.js microsoftSignIn, shared with the pane; an event
   handler cannot show a sign-in window). That token stays in this runtime's memory
   and is renewed once if the server refuses it (api.js call).

   If anything fails (no sign-in, the server refuses, the body cannot be set), the
   send is stopped (SoftBlock) with a message that says what to do. A followed email
   is never sent untracked behind the user's back: to send it untracked they switch
   "Follow this email" off in the pane and send again. */
(function (global) {
  "use strict";
  var FOLLOW = "mailbeaconFollow";
  /* The server writes its public URL here when it serves this file: classic Outlook
     on Windows runs this file alone (no page, no origin, no api.js), so the API's
     address must be absolute, and the token comes from the roaming settings. */
  var BASE = "{{PUBLIC_URL}}";
  if (BASE.indexOf("{{") === 0) BASE = "";
  var MAX_MESSAGE = 500; // Outlook shows at most 500 characters of errorMessage
  var UNTRACKED = " Or switch \"Follow this email\" off in the mailbeacon pane to send it untracked.";
  var PASTE = "Paste your mailbeacon token in the mailbeacon pane, then send again.";
  var SIGN_IN = "Open the mailbeacon pane and sign in, then send again.";

  /* A failure to show the user: why, and what to do about it. */
  function stop(why, todo) {
    var e = new Error(why);
    e.todo = todo || "";
    return e;
  }

  function message(e) {
    var why = String((e && e.message) || "unknown error").replace(/[.\s]+$/, "");
    var todo = (e && e.todo) ? " " + e.todo : "";
    var head = "mailbeacon could not follow this email: ";
    var room = MAX_MESSAGE - head.length - todo.length - UNTRACKED.length - 1;
    if (why.length > room) why = why.slice(0, Math.max(room - 1, 0)) + "…";
    return head + why + "." + todo + UNTRACKED;
  }

  function pastedToken() {
    var t = null;
    try { t = Office.context.roamingSettings.get("mailbeaconToken"); } catch (e) { t = null; }
    if (!t && global.MailbeaconApi) t = global.MailbeaconApi.getToken();
    return t || null;
  }

  /* The Microsoft sign-in, kept in memory across sends while this runtime lives. */
  var ms = null;
  var msKey = "";

  function msFailure(e) {
    var code = (e && e.errorCode) || "";
    var api = global.MailbeaconApi;
    if (api.isInteractionRequired(e)) {
      return stop("your Microsoft sign-in is needed", "Open the mailbeacon pane and sign in with Microsoft, then send again.");
    }
    // No page (classic Outlook on Windows runs this file bare) or an Outlook that
    // does not broker NAA to event handlers (office-js#4450: crypto_nonexistent).
    if (code === "mailbeacon_no_page" || code === "crypto_nonexistent" || code === "untrusted_origin") {
      return stop("Microsoft sign-in is not available to the send handler in this Outlook", PASTE);
    }
    return stop("Microsoft sign-in failed (" + ((e && (e.errorMessage || e.message)) || code || "unknown error") + ")",
      SIGN_IN + " If this keeps happening, paste your mailbeacon token in the pane instead.");
  }

  /* Resolves when there is a bearer for the API: the pasted token, else a Microsoft
     token acquired silently (then the api.js token source); rejects with stop(…). */
  function signIn() {
    if (pastedToken()) return Promise.resolve("token");
    var api = global.MailbeaconApi;
    if (!api) {
      return Promise.reject(stop("you have no mailbeacon token in this Outlook, and Microsoft sign-in is not " +
        "available to the send handler here", PASTE));
    }
    return api.loadConfig(BASE ? BASE + "/addin/config.json" : "config.json").then(function (c) {
      if (!c.entra) throw stop("you are not signed in to mailbeacon", "Open the mailbeacon pane and paste your mailbeacon token, then send again.");
      if (!api.naaSupported()) throw stop("Microsoft sign-in is not available in this Outlook", PASTE);
      var key = JSON.stringify(c.entra);
      if (!ms || msKey !== key) { ms = api.microsoftSignIn(c.entra); msKey = key; }
      return ms.token(false).then(function () {
        api.setTokenSource(ms.token);
        return "microsoft";
      }, function (e) {
        api.setTokenSource(null);
        throw msFailure(e);
      });
    });
  }

  /* POST to the API: through api.js when the page has it (pasted token or the
     Microsoft token source, renewed once), else with the pasted token alone. */
  function post(path, body) {
    if (global.MailbeaconApi) return global.MailbeaconApi.call("POST", path, body);
    return fetch(BASE + "/api/v1" + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + (pastedToken() || "") },
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (b) { return { status: r.status, body: b }; },
        function () { return { status: r.status, body: null }; });
    }, function (e) {
      return { status: 0, body: { error: { code: "network", message: "the server cannot be reached: " + e.message } } };
    });
  }

  /* What the API's refusal means for the user. The send stays blocked in every case
     (engagement_disabled and not_provisioned too): the user asked to follow it. */
  function refused(res, how) {
    var err = (res && res.body && res.body.error) || {};
    var text = err.message || "unexpected answer (HTTP " + (res ? res.status : "?") + ")";
    if (err.code === "signin_required") return stop("your Microsoft sign-in has ended", SIGN_IN);
    // The server's own words say whom to ask ("… ask an administrator to create it").
    if (err.code === "not_provisioned") return stop(text);
    if (res.status === 401) {
      return how === "microsoft"
        ? stop("mailbeacon did not accept your Microsoft sign-in (" + text + ")", SIGN_IN)
        : stop("your mailbeacon token was not accepted (" + text + ")", "Open the mailbeacon pane and sign in again, then send again.");
    }
    if (res.status === 0) return stop(text, "Check your connection, then send again.");
    return stop(text);
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

  /* A short informational bar on the item (best effort: not every host shows it). */
  function notify(item, text) {
    try {
      item.notificationMessages.replaceAsync("mailbeaconFollow", {
        type: "informationalMessage", message: text, icon: "Icon.16x16", persistent: false,
      });
    } catch (e) { /* no notification support */ }
  }

  function onMessageSendHandler(event) {
    var item = Office.context.mailbox.item;
    followFlag(item).then(function (flag) {
      if (flag !== "1") {
        event.completed({ allowEvent: true });
        return null;
      }
      return signIn().then(function (how) {
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
          if (res.status === 200 && res.body && res.body.followed === false) {
            /* A recipient asked not to be followed: the email leaves untracked. */
            notify(item, res.body.reason === "contact_opted_out"
              ? "Not followed: a recipient asked not to be tracked, so this email is sent untracked."
              : "Not followed: this email is sent untracked.");
            return null;
          }
          if (res.status !== 201) throw refused(res, how);
          return asyncCall(function (cb) {
            item.body.setAsync(res.body.html, { coercionType: Office.CoercionType.Html }, cb);
          });
        });
      }).then(function () {
        event.completed({ allowEvent: true });
      });
    }).catch(function (e) {
      event.completed({ allowEvent: false, errorMessage: message(e) });
    });
  }

  global.onMessageSendHandler = onMessageSendHandler;
  if (global.Office && Office.actions) {
    Office.actions.associate("onMessageSendHandler", onMessageSendHandler);
  }
})(typeof window !== "undefined" ? window : self);
