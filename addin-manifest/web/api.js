/* mailbeacon add-in: the API client shared by the task pane and the send handler.
   The server that serves these files is the API: every call goes to the same origin.
   The user's bearer token is kept in Outlook's roaming settings (so the send handler
   sees it too) and in localStorage when Office is not there. */
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

  /* A call to /api/v1; resolves {status, body}; never throws for HTTP errors. */
  function call(method, path, body) {
    var headers = { "Accept": "application/json" };
    var token = getToken();
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

  global.MailbeaconApi = { call: call, getToken: getToken, setToken: setToken, errorText: errorText };
})(typeof window !== "undefined" ? window : self);
