/* A stand-in for @azure/msal-browser's UMD bundle (window.msal), served instead of
   /addin/vendor/msal-browser-*.min.js when tests/addin/pane-entra.test.mjs drives the
   pane: Entra cannot be reached from the test machine. It models only what the pane
   and the dashboard use: createNestablePublicClientApplication (and, for the
   dashboard, createStandardPublicClientApplication) -> a client with initialize,
   getActiveAccount, getAllAccounts, setActiveAccount, acquireTokenSilent and
   acquireTokenPopup, and the InteractionRequiredAuthError / BrowserAuthError classes.
   The access tokens it hands out are real RS256 JWTs minted by the Rust test, which
   the server checks for real against its JWKS file.

   Configured through window.__MB_MSAL = { account, silent: [step…], popup: [step…] }
   where a step is { token, expiresIn? (seconds, default 3600) } or { error: "interaction_required" | "popup_window_error"
   | "user_cancelled" | … }; each call takes the next step, the last one repeats.
   Every call is recorded in window.__msalStub.calls. */
(function () {
  "use strict";
  var cfg = window.__MB_MSAL || {};
  var calls = [];
  var used = { silent: 0, popup: 0 };
  var active = null;

  class AuthError extends Error {
    constructor(code, message) {
      super(message);
      this.name = "AuthError";
      this.errorCode = code;
      this.errorMessage = message;
    }
  }
  class InteractionRequiredAuthError extends AuthError {
    constructor(code, message) { super(code, message); this.name = "InteractionRequiredAuthError"; }
  }
  class BrowserAuthError extends AuthError {
    constructor(code, message) { super(code, message); this.name = "BrowserAuthError"; }
  }

  function step(kind, req) {
    var list = cfg[kind] || [];
    var s = list[Math.min(used[kind]++, list.length - 1)] || { error: "no_step" };
    calls.push({
      kind: kind, scopes: req.scopes, forceRefresh: !!req.forceRefresh,
      account: req.account ? req.account.username : null,
    });
    if (s.error === "interaction_required") {
      return Promise.reject(new InteractionRequiredAuthError("interaction_required",
        "AADSTS50058: the user must sign in interactively"));
    }
    if (s.error) return Promise.reject(new BrowserAuthError(s.error, "stubbed MSAL error: " + s.error));
    active = cfg.account;
    return Promise.resolve({
      accessToken: s.token, account: cfg.account, scopes: req.scopes, tokenType: "Bearer",
      expiresOn: new Date(Date.now() + (s.expiresIn || 3600) * 1000),
    });
  }

  var pca = {
    initialize: function () { return Promise.resolve(); },
    getActiveAccount: function () { return active; },
    getAllAccounts: function () { return active ? [active] : []; },
    setActiveAccount: function (a) { active = a; },
    acquireTokenSilent: function (req) { return step("silent", req); },
    acquireTokenPopup: function (req) { return step("popup", req); },
  };

  window.msal = {
    createNestablePublicClientApplication: function (conf) {
      calls.push({ kind: "create", auth: conf && conf.auth });
      return Promise.resolve(pca);
    },
    // The dashboard (a page outside Outlook) uses the standard client.
    createStandardPublicClientApplication: function (conf) {
      calls.push({ kind: "create-standard", auth: conf && conf.auth, cache: conf && conf.cache });
      return Promise.resolve(pca);
    },
    AuthError: AuthError,
    InteractionRequiredAuthError: InteractionRequiredAuthError,
    BrowserAuthError: BrowserAuthError,
  };
  window.__msalStub = { calls: calls };
})();
