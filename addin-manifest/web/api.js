/* mailbeacon add-in: the API client shared by the task pane and the send handler.
   The server that serves these files is the API: every call goes to the same origin.
   A pasted mailbeacon token is kept in Outlook's roaming settings (so the send handler
   sees it too) and in localStorage when Office is not there. A Microsoft (Entra) access
   token is never stored: the pane hands a token source (setTokenSource) that keeps it in
   memory and asks MSAL again when it runs out; a refused Entra token is renewed once. */
(function (global) {
  "use strict";
  var KEY = "mailbeaconToken";

  function roaming() {
    try {
      return global.Office && Office.context && Office.context.roamingSettings;
    } catch (e) {
      return null;
    }
  }

  function getToken() {
    var r = roaming();
    var t = r && r.get(KEY);
    if (!t) {
      try { t = global.localStorage.getItem(KEY); } catch (e) { t = null; }
    }
    return t || null;
  }

  function setToken(token) {
    try {
      if (token) global.localStorage.setItem(KEY, token);
      else global.localStorage.removeItem(KEY);
    } catch (e) { /* storage may be blocked */ }
    var r = roaming();
    if (r) {
      if (token) r.set(KEY, token); else r.remove(KEY);
      return new Promise(function (resolve) { r.saveAsync(function () { resolve(); }); });
    }
    return Promise.resolve();
  }

  /* Where bearer tokens come from when no token was pasted: a function (force) that
     resolves an access token, force meaning "not the one you have". */
  var source = null;
  function setTokenSource(fn) { source = fn || null; }

  function bearer(force) {
    var t = getToken();
    if (t) return Promise.resolve({ token: t, entra: false });
    if (source) return source(!!force).then(function (a) { return { token: a, entra: true }; });
    return Promise.resolve({ token: null, entra: false });
  }

  function signinLost(e) {
    return { status: 401, body: { error: { code: "signin_required",
      message: "Your Microsoft sign-in has ended (" + ((e && (e.errorMessage || e.message)) || "no token") + "). Sign in again." } } };
  }

  /* A call to /api/v1; resolves {status, body}; never throws for HTTP errors. */
  function call(method, path, body) {
    return bearer(false).then(function (b) {
      return send(method, path, body, b.token).then(function (res) {
        var code = res.body && res.body.error && res.body.error.code;
        // The server refused a Microsoft token we still thought good (revoked, clock
        // skew, rolled key): renew it once and retry. Not for a missing account.
        if (res.status !== 401 || !b.entra || code === "not_provisioned") return res;
        return bearer(true).then(function (b2) { return send(method, path, body, b2.token); }, signinLost);
      });
    }, signinLost);
  }

  function send(method, path, body, token) {
    var headers = { "Accept": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch("/api/v1" + path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      return r.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
        return { status: r.status, body: parsed };
      });
    }, function (e) {
      return { status: 0, body: { error: { code: "network", message: "The server cannot be reached: " + e.message } } };
    });
  }

  function errorText(res) {
    var e = res && res.body && res.body.error;
    return e ? e.message : "Unexpected answer (HTTP " + (res ? res.status : "?") + ")";
  }

  global.MailbeaconApi = {
    call: call, getToken: getToken, setToken: setToken, setTokenSource: setTokenSource, errorText: errorText,
  };
})(typeof window !== "undefined" ? window : self);
