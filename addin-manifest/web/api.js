/* mailbeacon add-in: the API client shared by the task pane and the send handler.
   The server that serves these files is the API: every call goes to the same origin.
   A pasted mailbeacon token is kept in Outlook's roaming settings (so the send handler
   sees it too) and in localStorage when Office is not there. A Microsoft (Entra) access
   token is never stored: the pane and the send handler hand a token source
   (setTokenSource) that keeps it in memory and asks MSAL again when it runs out; a
   refused Entra token is renewed once. The MSAL side (config.json, the NestedAppAuth
   check, loading the vendored MSAL, silent and popup sign-in) is microsoftSignIn below,
   shared by both pages. */
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

  /* ---- Microsoft sign-in (MSAL Nested App Authentication) ----------------- */

  var MSAL_SCRIPT = "vendor/msal-browser-4.30.0.min.js";
  var RENEW_BEFORE_MS = 5 * 60 * 1000;

  /* GET config.json (url: relative to the page, or absolute): {entra: {client_id,
     authority, scopes}} or {entra: null}, also when it cannot be read. */
  function loadConfig(url) {
    return fetch(url || "config.json", { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { entra: null }; })
      .catch(function () { return { entra: null }; })
      .then(function (c) { return c && c.entra ? c : { entra: null }; });
  }

  /* NAA needs an Outlook that brokers the sign-in (requirement set NestedAppAuth 1.1). */
  function naaSupported() {
    try {
      var req = global.Office && Office.context && Office.context.requirements;
      return !!(req && typeof req.isSetSupported === "function" && req.isSetSupported("NestedAppAuth", "1.1"));
    } catch (e) { return false; }
  }

  /* Thrown when there is no page to load MSAL into: classic Outlook on Windows runs
     the send handler as a bare script (no DOM). */
  function noPage() {
    var e = new Error("there is no page to load the Microsoft sign-in library into");
    e.errorCode = "mailbeacon_no_page";
    return e;
  }

  function loadMsal(src) {
    if (global.msal) return Promise.resolve(global.msal);
    var doc = typeof document !== "undefined" ? document : null;
    var parent = doc && typeof doc.createElement === "function" && (doc.head || doc.documentElement);
    if (!parent) return Promise.reject(noPage());
    return new Promise(function (resolve, reject) {
      var s = doc.createElement("script");
      s.src = src || MSAL_SCRIPT;
      s.onload = function () {
        if (global.msal) resolve(global.msal);
        else reject(new Error("the Microsoft sign-in library did not load"));
      };
      s.onerror = function () { reject(new Error("the Microsoft sign-in library could not be loaded")); };
      parent.appendChild(s);
    });
  }

  function isInteractionRequired(e) {
    return !!e && (e.name === "InteractionRequiredAuthError" ||
      (global.msal && msal.InteractionRequiredAuthError && e instanceof msal.InteractionRequiredAuthError));
  }

  /* A Microsoft sign-in for the Entra settings of config.json. The access token is
     kept in memory only (never stored) and asked for again 5 minutes before it
     expires. token(force) is silent (a token source for setTokenSource; force: not
     the one you have); popup() shows Microsoft's window (the pane's button only:
     event handlers cannot show UI). Both reject with MSAL's error. */
  function microsoftSignIn(entra, scriptUrl) {
    var st = { pca: null, token: null, expires: 0, account: null };

    function app() {
      if (st.pca) return Promise.resolve(st.pca);
      return loadMsal(scriptUrl).then(function (m) {
        // Resolves an initialized client; NAA when Outlook brokers it.
        return m.createNestablePublicClientApplication({ auth: { clientId: entra.client_id, authority: entra.authority } });
      }).then(function (pca) { st.pca = pca; return pca; });
    }

    function request(force) {
      var req = { scopes: entra.scopes };
      var pca = st.pca;
      var account = st.account ||
        (pca && typeof pca.getActiveAccount === "function" && pca.getActiveAccount()) ||
        (pca && typeof pca.getAllAccounts === "function" && pca.getAllAccounts()[0]) || null;
      // Without an account, NAA uses the one signed in to Outlook.
      if (account) req.account = account;
      if (force) req.forceRefresh = true;
      return req;
    }

    function keep(result) {
      if (!result || !result.accessToken) throw new Error("Microsoft returned no access token");
      st.token = result.accessToken;
      var exp = result.expiresOn ? new Date(result.expiresOn).getTime() : NaN;
      st.expires = isNaN(exp) ? Date.now() + RENEW_BEFORE_MS : exp;
      if (result.account) {
        st.account = result.account;
        if (typeof st.pca.setActiveAccount === "function") st.pca.setActiveAccount(result.account);
      }
      return st.token;
    }

    function forget() { st.token = null; st.expires = 0; }

    function token(force) {
      if (!force && st.token && st.expires - Date.now() > RENEW_BEFORE_MS) return Promise.resolve(st.token);
      return app().then(function (pca) { return pca.acquireTokenSilent(request(force)); }).then(keep, function (e) {
        forget();
        throw e;
      });
    }

    function popup() {
      return app().then(function (pca) { return pca.acquireTokenPopup(request(false)); }).then(keep);
    }

    return { token: token, popup: popup, forget: forget, account: function () { return st.account; } };
  }

  global.MailbeaconApi = {
    call: call, getToken: getToken,
    // The bearer token for calls made outside call() (the live stream).
    bearer: function () { return bearer(false).then(function (b) { return b.token; }); }, setToken: setToken, setTokenSource: setTokenSource, errorText: errorText,
    loadConfig: loadConfig, naaSupported: naaSupported, microsoftSignIn: microsoftSignIn,
    isInteractionRequired: isInteractionRequired,
  };
})(typeof window !== "undefined" ? window : self);
