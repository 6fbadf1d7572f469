//! The task pane's files (`addin-manifest/web/`), embedded in the binary with
//! `include_bytes!`: served under `/addin/` by `http::pane` and checked against
//! the manifests by `addin_manifest`.

/// A file of the task pane, embedded in the binary.
pub struct Asset {
    /// The path under `/addin/` (and under `addin-manifest/web/`).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

impl Asset {
    /// Returns true if and only if the file is third-party code from `vendor/`
    /// (served as is; its version is in its name, so it never changes).
    pub fn vendored(&self) -> bool {
        self.path.starts_with("vendor/")
    }
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../addin-manifest/web/", $path)),
        }
    };
}

pub const ASSETS: &[Asset] = &[
    asset!("taskpane.html", "text/html; charset=utf-8"),
    asset!("taskpane.css", "text/css; charset=utf-8"),
    asset!("taskpane.js", "text/javascript; charset=utf-8"),
    asset!("commands.html", "text/html; charset=utf-8"),
    asset!("launchevent.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("live.js", "text/javascript; charset=utf-8"),
    asset!("icon-16.png", "image/png"),
    asset!("icon-32.png", "image/png"),
    asset!("icon-64.png", "image/png"),
    asset!("icon-80.png", "image/png"),
    asset!("icon-128.png", "image/png"),
    asset!("icon-color-192.png", "image/png"),
    asset!("icon-outline-32.png", "image/png"),
    // Third-party code (see vendor/README.md); loaded by the pane only when
    // Entra sign-in is configured.
    asset!(
        "vendor/msal-browser-4.30.0.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/msal-browser.LICENSE.txt",
        "text/plain; charset=utf-8"
    ),
];

/// The embedded file at `name` (a path under `/addin/`).
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == name)
}

/// The bytes of one embedded file.
pub fn asset(name: &str) -> Option<&'static [u8]> {
    find(name).map(|a| a.body)
}
