//! The Outlook add-in's manifests: the XML add-in only manifest and the unified
//! JSON manifest, written for one deployment from the templates in
//! `addin-manifest/` (`mailbeacon addin manifest --public-url https://…`).
//!
//! Also the checks the Office schemas cannot express, used by the tests and by
//! the command before it writes anything: every URL is https and inside the
//! add-in's domain, every `resid` resolves in its own `VersionOverrides`, each
//! icon has the size it claims (read from the PNG header), and the launch-event
//! function is registered in the JavaScript. Pure string work; only `write`
//! touches the file system.

use crate::addin::assets::asset;

pub const XML_TEMPLATE: &str = include_str!("../../addin-manifest/manifest.template.xml");
pub const JSON_TEMPLATE: &str = include_str!("../../addin-manifest/manifest.template.json");
/// The add-in id used unless a deployment picks its own.
pub const DEFAULT_ID: &str = "5b0f3c7e-6a1d-4f63-9d3e-8c4a2e1b7f90";
/// The function `OnMessageSend` runs, as named in both manifests.
pub const SEND_HANDLER: &str = "onMessageSendHandler";

/// Checks a deployment's public URL and add-in id; returns the host.
pub fn validate_inputs(public_url: &str, id: &str) -> Result<String, String> {
    let host = public_url
        .strip_prefix("https://")
        .ok_or_else(|| {
            format!("the add-in must be served over HTTPS: --public-url {public_url:?} must start with https://")
        })?
        .split('/')
        .next()
        .unwrap_or("");
    if host.is_empty() || host.contains(['?', '#', ' ', '@', '"', '<', '>', '&']) {
        return Err(format!("{public_url:?} is not a valid public URL"));
    }
    let guid_shape = id.len() == 36
        && id.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if !guid_shape {
        return Err(format!("the add-in id {id:?} must be a GUID"));
    }
    Ok(host.to_string())
}

fn fill(template: &str, public_url: &str, id: &str) -> Result<String, String> {
    let public_url = public_url.trim_end_matches('/');
    let host = validate_inputs(public_url, id)?;
    Ok(template
        .replace("{{PUBLIC_URL}}", public_url)
        .replace("{{PUBLIC_HOST}}", &host)
        .replace("{{ADDIN_ID}}", id))
}

/// The XML manifest for a deployment.
pub fn xml(public_url: &str, id: &str) -> Result<String, String> {
    fill(XML_TEMPLATE, public_url, id)
}

/// The unified JSON manifest for a deployment (its icons are package files).
pub fn json(public_url: &str, id: &str) -> Result<String, String> {
    fill(JSON_TEMPLATE, public_url, id)
}

/// Writes `manifest.xml`, `manifest.json` and the JSON manifest's icons into
/// `dir` after checking them; returns the paths written.
pub fn write(
    public_url: &str,
    id: Option<&str>,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, String> {
    let id = id.unwrap_or(DEFAULT_ID);
    let public_url = public_url.trim_end_matches('/');
    let x = xml(public_url, id)?;
    let j = json(public_url, id)?;
    let mut problems = check_xml(&x, public_url);
    problems.extend(check_json(&j, public_url));
    if !problems.is_empty() {
        return Err(format!(
            "the manifest has problems: {}",
            problems.join("; ")
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let files: [(&str, &[u8]); 4] = [
        ("manifest.xml", x.as_bytes()),
        ("manifest.json", j.as_bytes()),
        (
            "icon-color-192.png",
            asset("icon-color-192.png").unwrap_or_default(),
        ),
        (
            "icon-outline-32.png",
            asset("icon-outline-32.png").unwrap_or_default(),
        ),
    ];
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}

/// Width and height from a PNG's IHDR, if `bytes` is a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

/// Every value of attribute `attr` (`name="…"`) in `text`.
fn attr_values<'a>(text: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!(" {attr}=\"");
    text.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = &text[i + pat.len()..];
            rest.find('"').map(|j| &rest[..j])
        })
        .collect()
}

/// The `<tag …>` elements (start tags) in `text`.
fn elements<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    let pat = format!("<{tag} ");
    text.match_indices(&pat)
        .filter_map(|(i, _)| text[i..].find('>').map(|j| &text[i..i + j + 1]))
        .collect()
}

/// The embedded file a URL on `public_url` names, if it is one of the pane's.
fn asset_for(url: &str, public_url: &str) -> Option<&'static [u8]> {
    url.strip_prefix(public_url)?
        .strip_prefix("/addin/")
        .and_then(asset)
}

/// Everything wrong with an XML manifest written for `public_url` that the
/// schemas cannot see. Empty when it is fine.
pub fn check_xml(xml: &str, public_url: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let domains: Vec<&str> = xml
        .split("<AppDomain>")
        .skip(1)
        .filter_map(|s| s.split("</AppDomain>").next())
        .collect();
    if domains.is_empty() {
        problems.push("no AppDomain".to_string());
    }
    let mut urls: Vec<&str> = attr_values(xml, "DefaultValue")
        .into_iter()
        .filter(|v| v.contains("://"))
        .collect();
    urls.extend(domains.iter().copied());
    for u in &urls {
        if !u.starts_with("https://") {
            problems.push(format!("{u} is not https"));
        }
        if !domains
            .iter()
            .any(|d| *u == *d || u.starts_with(&format!("{d}/")))
        {
            problems.push(format!("{u} is outside the AppDomains"));
        }
        if u.contains("/addin/") && asset_for(u, public_url).is_none() {
            problems.push(format!("{u} names no file the server serves"));
        }
    }
    // Each VersionOverrides resolves resids against its own Resources.
    let inner_at = xml.find("xsi:type=\"VersionOverridesV1_1\"");
    let outer_at = xml.find("xsi:type=\"VersionOverridesV1_0\"");
    let (Some(outer_at), Some(inner_at)) = (outer_at, inner_at) else {
        problems.push("VersionOverrides 1.0 wrapping 1.1 is missing".into());
        return problems;
    };
    let v10 = &xml[outer_at..inner_at];
    let v11 = &xml[inner_at..];
    for (name, part) in [("1.0", v10), ("1.1", v11)] {
        let ids: Vec<&str> = ["bt:Image", "bt:Url", "bt:String"]
            .iter()
            .flat_map(|t| elements(part, t))
            .flat_map(|e| attr_values(e, "id"))
            .collect();
        for r in attr_values(part, "resid") {
            if !ids.contains(&r) {
                problems.push(format!(
                    "resid {r:?} does not resolve in VersionOverrides {name}"
                ));
            }
        }
        // Icons: each <bt:Image size="N" resid="R"/> names a PNG of N×N.
        for e in elements(part, "bt:Image") {
            let (Some(size), Some(resid)) = (
                attr_values(e, "size").first().copied(),
                attr_values(e, "resid").first().copied(),
            ) else {
                continue;
            };
            let url = elements(part, "bt:Image")
                .into_iter()
                .find(|d| attr_values(d, "id").first() == Some(&resid))
                .and_then(|d| attr_values(d, "DefaultValue").first().copied());
            check_icon(&mut problems, url, size, public_url);
        }
    }
    for (tag, size) in [("IconUrl", "64"), ("HighResolutionIconUrl", "128")] {
        let url = elements(xml, tag)
            .first()
            .and_then(|e| attr_values(e, "DefaultValue").first().copied());
        check_icon(&mut problems, url, size, public_url);
    }
    if !v11.contains("<SupportsPinning>true</SupportsPinning>") {
        problems.push("the task pane is not pinnable".into());
    }
    let send = elements(v11, "LaunchEvent")
        .into_iter()
        .find(|e| e.contains("Type=\"OnMessageSend\""));
    match send {
        None => problems.push("no OnMessageSend launch event".into()),
        Some(e) => {
            if !e.contains("SendMode=\"SoftBlock\"") {
                problems.push("OnMessageSend must use SendMode SoftBlock".into());
            }
            for f in attr_values(e, "FunctionName") {
                check_registered(&mut problems, f);
            }
        }
    }
    problems
}

fn check_icon(problems: &mut Vec<String>, url: Option<&str>, size: &str, public_url: &str) {
    let Some(url) = url else {
        problems.push(format!("no URL for the {size}px icon"));
        return;
    };
    let n: u32 = size.parse().unwrap_or(0);
    match asset_for(url, public_url).and_then(png_size) {
        Some((w, h)) if w == n && h == n => {}
        Some((w, h)) => problems.push(format!("{url} is {w}×{h}, not {n}×{n}")),
        None => problems.push(format!("{url} is not a PNG the server serves")),
    }
}

fn check_registered(problems: &mut Vec<String>, function: &str) {
    let js = asset("launchevent.js").map(String::from_utf8_lossy);
    let registered = js.is_some_and(|js| {
        js.contains(&format!("Office.actions.associate(\"{function}\""))
            || js.contains(&format!("Office.actions.associate('{function}'"))
    });
    if !registered {
        problems.push(format!(
            "launch event function {function} is not registered with Office.actions.associate in launchevent.js"
        ));
    }
}

/// Everything wrong with a unified JSON manifest written for `public_url`.
pub fn check_json(text: &str, public_url: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    for key in [
        "$schema",
        "manifestVersion",
        "version",
        "id",
        "developer",
        "name",
        "description",
        "icons",
        "accentColor",
        "extensions",
    ] {
        if v.get(key).is_none() {
            problems.push(format!("missing {key}"));
        }
    }
    let host = public_url.trim_start_matches("https://");
    if v["validDomains"]
        .as_array()
        .is_none_or(|d| !d.iter().any(|x| x == host))
    {
        problems.push(format!("validDomains must list {host}"));
    }
    let mut urls = Vec::new();
    collect_urls(&v, &mut urls);
    for u in &urls {
        if !u.starts_with(&format!("{public_url}/")) {
            problems.push(format!("{u} is not on {public_url}"));
        } else if u.contains("/addin/") && asset_for(u, public_url).is_none() {
            problems.push(format!("{u} names no file the server serves"));
        }
    }
    for (key, n) in [("outline", 32), ("color", 192)] {
        let file = v["icons"][key].as_str().unwrap_or("");
        match asset(file).and_then(png_size) {
            Some((w, h)) if w == n && h == n => {}
            _ => problems.push(format!("icons.{key} must be a {n}×{n} PNG, got {file:?}")),
        }
    }
    let ext = &v["extensions"][0];
    let actions: Vec<&str> = ext["runtimes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["actions"].as_array().into_iter().flatten())
        .filter_map(|a| a["id"].as_str())
        .collect();
    let mut referenced: Vec<&str> = Vec::new();
    for r in ext["ribbons"].as_array().into_iter().flatten() {
        for t in r["tabs"].as_array().into_iter().flatten() {
            for g in t["groups"].as_array().into_iter().flatten() {
                for c in g["controls"].as_array().into_iter().flatten() {
                    referenced.extend(c["actionId"].as_str());
                    for i in c["icons"].as_array().into_iter().flatten() {
                        let size = i["size"].as_u64().unwrap_or(0) as u32;
                        match i["url"]
                            .as_str()
                            .and_then(|u| asset_for(u, public_url))
                            .and_then(png_size)
                        {
                            Some((w, h)) if w == size && h == size => {}
                            _ => problems
                                .push(format!("ribbon icon {} is not {size}×{size}", i["url"])),
                        }
                    }
                }
            }
        }
    }
    let mut send_ok = false;
    for a in ext["autoRunEvents"].as_array().into_iter().flatten() {
        for e in a["events"].as_array().into_iter().flatten() {
            referenced.extend(e["actionId"].as_str());
            if e["type"] == "messageSending" && e["options"]["sendMode"] == "softBlock" {
                send_ok = true;
                if let Some(f) = e["actionId"].as_str() {
                    check_registered(&mut problems, f);
                }
            }
        }
    }
    if !send_ok {
        problems.push("no messageSending auto-run event with sendMode softBlock".into());
    }
    for r in referenced {
        if !actions.contains(&r) {
            problems.push(format!("actionId {r:?} is not defined in runtimes"));
        }
    }
    let pinnable = ext["runtimes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["actions"].as_array().into_iter().flatten())
        .any(|a| a["type"] == "openPage" && a["pinnable"] == true);
    if !pinnable {
        problems.push("the task pane is not pinnable".into());
    }
    problems
}

fn collect_urls<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) if s.contains("://") && !s.contains("json-schemas") => {
            out.push(s)
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_urls(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_urls(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mail.example.test";

    #[test]
    fn manifests_pass_their_checks() {
        let x = xml(URL, DEFAULT_ID).unwrap();
        assert_eq!(check_xml(&x, URL), Vec::<String>::new());
        let j = json(URL, DEFAULT_ID).unwrap();
        assert_eq!(check_json(&j, URL), Vec::<String>::new());
        assert!(!x.contains("{{") && !j.contains("{{"));
    }

    #[test]
    fn checks_catch_mistakes() {
        let x = xml(URL, DEFAULT_ID).unwrap();
        let broken = x
            .replacen("resid=\"Icon.16\"", "resid=\"Icon.17\"", 1)
            .replacen("/addin/icon-80.png", "/addin/icon-64.png", 1)
            .replacen(
                &format!("{URL}/addin/commands.html"),
                "http://elsewhere.test/x",
                1,
            );
        let p = check_xml(&broken, URL).join("\n");
        assert!(p.contains("\"Icon.17\" does not resolve"), "{p}");
        assert!(p.contains("is 64×64, not 80×80"), "{p}");
        assert!(p.contains("http://elsewhere.test/x is not https"), "{p}");
        assert!(p.contains("outside the AppDomains"), "{p}");
        assert!(xml("http://x.test", DEFAULT_ID).is_err());
        assert!(xml(URL, "not-a-guid").is_err());
        let j = json(URL, DEFAULT_ID)
            .unwrap()
            .replace("\"softBlock\"", "\"block\"");
        assert!(!check_json(&j, URL).is_empty());
    }

    #[test]
    fn png_headers() {
        assert_eq!(asset("icon-80.png").and_then(png_size), Some((80, 80)));
        assert_eq!(png_size(b"GIF89a"), None);
    }
}
