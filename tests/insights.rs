//! Insights end to end against the real binary: cards from real opens and clicks
//! (and only the caller's), dismiss and snooze (kept across a restart), the
//! contact and email scores, the best time to send, `/stats?interval=`, the
//! dashboard's files, and every bad input answered with a clear 4xx.

mod support;

use serde_json::Value;
use support::*;

const BOB: &str = "bob@client.test";

fn open(url: &str) {
    let (st, _, _) = raw("GET", url, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 200, "{url}");
}

fn click(url: &str) {
    let (st, _, _) = raw("GET", url, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 302, "{url}");
}

fn cards(s: &Server, token: &str) -> Vec<Value> {
    let (st, v) = s.api("GET", "/api/v1/insights", Some(token), None);
    assert_eq!(st, 200, "{v}");
    v["cards"].as_array().expect("cards").clone()
}

fn of_kind<'a>(cards: &'a [Value], kind: &str) -> Vec<&'a Value> {
    cards.iter().filter(|c| c["kind"] == kind).collect()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn insights_api() {
    let mut s = Server::start();
    let ann = s.user("ann@sales.test");
    let eve = s.user("eve@sales.test");

    // Three emails to Bob, each opened by a person; the first one's link clicked.
    let mut ids = Vec::new();
    for i in 0..3 {
        let (id, copy) = s.follow_one(&ann, BOB, "https://shop.example/pricing");
        open(copy.pixel.as_deref().expect("pixel"));
        if i == 0 {
            click(&copy.clicks[0]);
        }
        ids.push(id);
    }
    // Eve's email to Bob, opened: never in Ann's view.
    let resp = s.follow(
        &eve,
        &email(
            "eve@sales.test",
            &[BOB],
            &[],
            &[],
            &["https://shop.example/"],
        ),
    );
    let eve_email = resp["id"].as_str().unwrap().to_string();
    let eve_copy = copy(&resp["recipients"][0], &s.base);
    open(eve_copy.pixel.as_deref().unwrap());

    // Cards: one email_opened per email, one link_clicked; each says why.
    let all = cards(&s, &ann);
    let opened = of_kind(&all, "email_opened");
    assert_eq!(opened.len(), 3, "{all:?}");
    for c in &opened {
        assert!(ids.contains(&c["email_id"].as_str().unwrap().to_string()));
        assert_eq!(c["contact"], BOB);
        assert!(c["title"].as_str().unwrap().contains("opened"), "{c}");
        assert!(
            c["detail"].as_str().unwrap().starts_with("First opened"),
            "{c}"
        );
        assert_eq!(c["id"].as_str().unwrap().len(), 16);
        assert!(c["at"].as_str().unwrap().ends_with('Z'));
    }
    let clicked = of_kind(&all, "link_clicked");
    assert_eq!(clicked.len(), 1, "{all:?}");
    assert_eq!(clicked[0]["email_id"], ids[0].as_str());
    assert!(clicked[0]["detail"]
        .as_str()
        .unwrap()
        .contains("https://shop.example/pricing"));
    // Eve sees her own card only.
    let eves = cards(&s, &eve);
    assert_eq!(eves.len(), 1, "{eves:?}");
    assert_eq!(eves[0]["email_id"], eve_email.as_str());

    // Dismiss: the card does not come back; again is fine; unknown ids are 404,
    // and so is another user's card.
    let gone = opened[0]["id"].as_str().unwrap().to_string();
    let dismiss = |token: &str, id: &str| {
        s.api(
            "POST",
            &format!("/api/v1/insights/{id}/dismiss"),
            Some(token),
            None,
        )
    };
    let (st, v) = dismiss(&ann, &gone);
    assert_eq!(
        (st, v["dismissed"].clone()),
        (200, Value::Bool(true)),
        "{v}"
    );
    assert!(!cards(&s, &ann).iter().any(|c| c["id"] == gone.as_str()));
    assert_eq!(dismiss(&ann, &gone).0, 200);
    let (st, v) = dismiss(&ann, "0123456789abcdef");
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    assert_eq!(dismiss(&ann, "not-a-card").0, 404);
    let eve_card = eves[0]["id"].as_str().unwrap().to_string();
    assert_eq!(dismiss(&ann, &eve_card).0, 404);

    // Snooze: the past, nonsense and too far are 400; tomorrow hides the card.
    let nap = clicked[0]["id"].as_str().unwrap().to_string();
    let snooze = |until: Value| {
        s.api(
            "POST",
            &format!("/api/v1/insights/{nap}/snooze"),
            Some(&ann),
            Some(serde_json::json!({ "until": until })),
        )
    };
    for bad in [
        Value::from("2020-01-01T00:00:00Z"),
        Value::from("tomorrow"),
        Value::from("2999-01-01T00:00:00Z"),
        Value::from(5),
    ] {
        let (st, v) = snooze(bad.clone());
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"]["message"].is_string());
    }
    let tomorrow = mailbeacon::ids::rfc3339(mailbeacon::ids::now_ms() + 86_400_000);
    let (st, v) = snooze(Value::from(tomorrow.clone()));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["snoozed_until"], tomorrow.as_str());
    let (st, v) = s.api(
        "POST",
        "/api/v1/insights/0123456789abcdef/snooze",
        Some(&ann),
        Some(serde_json::json!({ "until": tomorrow })),
    );
    assert_eq!((st, code(&v)), (404, "not_found"));
    let left = cards(&s, &ann);
    assert_eq!(of_kind(&left, "email_opened").len(), 2);
    assert!(of_kind(&left, "link_clicked").is_empty());

    // Both survive a restart.
    s.stop();
    s.restart();
    let after = cards(&s, &ann);
    assert!(!after
        .iter()
        .any(|c| c["id"] == gone.as_str() || c["id"] == nap.as_str()));
    assert_eq!(after.len(), 2, "{after:?}");

    // The contact's score: 3 emails opened today (6 × 3 = 18), 1 clicked (10).
    let (st, v) = s.api(
        "GET",
        "/api/v1/insights/contacts/Bob@Client.test",
        Some(&ann),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["score"], 28, "{v}");
    let f = v["factors"].as_array().unwrap();
    let pts: Vec<(String, u64)> = f
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().into(),
                x["points"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pts,
        [
            ("opens".into(), 18),
            ("clicks".into(), 10),
            ("replies".into(), 0)
        ]
    );
    assert_eq!(pts.iter().map(|p| p.1).sum::<u64>(), 28);
    assert_eq!(v["emails"], 3);
    assert!(v["last_activity"].is_string());
    assert_eq!(v["best_send_hour"]["basis"], "recipient");
    assert_eq!(v["best_send_hour"]["sample"], 3);
    let hour = v["best_send_hour"]["hour"].as_u64().unwrap();
    assert!(hour < 24);
    // Eve's view of Bob has her email only; an unknown contact scores zero.
    let (_, v) = s.api(
        "GET",
        "/api/v1/insights/contacts/bob%40client.test",
        Some(&eve),
        None,
    );
    assert_eq!(
        (v["score"].clone(), v["emails"].clone()),
        (Value::from(6), Value::from(1))
    );
    let (st, v) = s.api(
        "GET",
        "/api/v1/insights/contacts/nobody@x.test",
        Some(&ann),
        None,
    );
    assert_eq!((st, v["score"].clone()), (200, Value::from(0)));
    assert!(v.get("best_send_hour").is_none());
    let (st, v) = s.api(
        "GET",
        "/api/v1/insights/contacts/not-an-address",
        Some(&ann),
        None,
    );
    assert_eq!((st, code(&v)), (400, "invalid_address"));

    // One email's score: its one recipient opened and clicked: 30 + 30.
    let (st, v) = s.api(
        "GET",
        &format!("/api/v1/insights/emails/{}", ids[0]),
        Some(&ann),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["score"], 60, "{v}");
    assert_eq!(v["email_id"], ids[0].as_str());
    for (token, id) in [
        (&eve, ids[0].as_str()),
        (&ann, eve_email.as_str()),
        (&ann, "zz"),
    ] {
        let (st, v) = s.api(
            "GET",
            &format!("/api/v1/insights/emails/{id}"),
            Some(token),
            None,
        );
        assert_eq!((st, code(&v)), (404, "not_found"));
    }

    // The best time to send: Bob's own hour; someone new falls back to the
    // pattern of Ann's emails (all opened at the same hour).
    let (st, v) = s.api(
        "GET",
        "/api/v1/insights/send-time?to=bob@client.test,new@client.test&tz=%2B02:00",
        Some(&ann),
        None,
    );
    assert_eq!(st, 200, "{v}");
    let r = v["recipients"].as_array().unwrap();
    assert_eq!(r[0]["address"], BOB);
    assert_eq!(
        (r[0]["basis"].clone(), r[0]["hour"].as_u64()),
        (Value::from("recipient"), Some(hour))
    );
    assert_eq!(r[1]["basis"], "organization");
    assert_eq!(r[1]["sample"], 3);
    let suggested = v["suggested"].as_str().unwrap();
    assert_eq!(&suggested[11..13], format!("{hour:02}"), "{v}");
    assert!(v["suggested_local"].as_str().unwrap().ends_with("+02:00"));
    // Eve has one open: too few, so working hours.
    let (_, v) = s.api(
        "GET",
        "/api/v1/insights/send-time?to=bob@client.test",
        Some(&eve),
        None,
    );
    assert_eq!(v["recipients"][0]["basis"], "default");
    assert_eq!(v["recipients"][0]["hour"], 9);
    assert_eq!(v["recipients"][0]["sample"], 0);
    // Nobody: working hours.
    let (st, v) = s.api("GET", "/api/v1/insights/send-time?to=", Some(&ann), None);
    assert_eq!(
        (st, v["recipients"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    assert!(v["suggested"].as_str().unwrap().contains("T09:00:00"));
    let many: Vec<String> = (0..51).map(|i| format!("p{i}@x.test")).collect();
    for (q, want) in [
        ("", "missing_to"),
        ("?to=bob@client.test,oops", "invalid_address"),
        ("?to=bob@client.test&tz=Europe/Paris", "invalid_tz"),
        ("?to=bob@client.test&tz=%2B15:00", "invalid_tz"),
        (&format!("?to={}", many.join(",")), "too_many_recipients"),
    ] {
        let (st, v) = s.api(
            "GET",
            &format!("/api/v1/insights/send-time{q}"),
            Some(&ann),
            None,
        );
        assert_eq!((st, code(&v)), (400, want), "{q}: {v}");
    }

    // KPIs over time: day buckets from midnight UTC, empty ones included.
    let (st, v) = s.api("GET", "/api/v1/stats?days=7&interval=day", Some(&ann), None);
    assert_eq!(st, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 8, "{v}");
    assert!(series
        .iter()
        .all(|p| p["start"].as_str().unwrap().ends_with("T00:00:00.000Z")));
    let today = series.last().unwrap();
    assert_eq!(
        (today["sent"].clone(), today["delivered"].clone()),
        (Value::from(3), Value::from(3))
    );
    assert_eq!(today["opened"], 3);
    assert_eq!(today["clicked"], 1);
    assert_eq!(today["replied"], 0);
    assert_eq!(today["open_rate"], 1.0);
    assert_eq!(series[0]["emails"], 0);
    assert_eq!(series[0]["open_rate"], Value::Null);
    assert_eq!(v["templates"][0]["series"].as_array().unwrap().len(), 8);
    let (_, w) = s.api(
        "GET",
        "/api/v1/stats?days=30&interval=week",
        Some(&ann),
        None,
    );
    let weeks = w["series"].as_array().unwrap();
    assert!(weeks.len() == 5 || weeks.len() == 6, "{w}");
    // Mondays.
    for p in weeks {
        let start = p["start"].as_str().unwrap();
        let ms = mailbeacon::http::insights::parse_time(start).unwrap();
        assert_eq!((ms / 86_400_000 + 3) % 7, 0, "{start}");
    }
    assert_eq!(sum(weeks, "sent"), 3);
    let (_, plain) = s.api("GET", "/api/v1/stats", Some(&ann), None);
    assert!(plain.get("series").is_none());
    let (st, v) = s.api("GET", "/api/v1/stats?interval=month", Some(&ann), None);
    assert_eq!((st, code(&v)), (400, "invalid_interval"));
    // Ten years by day: the last 550 days, and it says so.
    let (st, v) = s.api(
        "GET",
        "/api/v1/stats?interval=day&days=3650",
        Some(&ann),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["series"].as_array().unwrap().len(), 550);
    assert_eq!(v["series_since"], v["series"][0]["start"]);
    assert_eq!(v["emails"], 3);

    // Methods and sign-in.
    let (st, hs, _) = raw(
        "DELETE",
        &s.url("/api/v1/insights"),
        &[("Authorization", &format!("Bearer {ann}"))],
    );
    assert_eq!((st, header(&hs, "allow")), (405, Some("GET")));
    let (st, _) = s.api("GET", "/api/v1/insights/nope/more/parts", Some(&ann), None);
    assert_eq!(st, 404);
    let (st, _) = s.api(
        "GET",
        &format!("/api/v1/insights/{gone}/dismiss"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 405);
    let (st, _) = s.api("GET", "/api/v1/insights", None, None);
    assert_eq!(st, 401);

    // The dashboard's files.
    let (st, hs, body) = raw("GET", &s.url("/dashboard/"), &[]);
    assert_eq!(st, 200);
    assert!(header(&hs, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("dashboard.js"));
    assert!(header(&hs, "content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    for f in ["dashboard.js", "dashboard.css", "api.js"] {
        assert_eq!(
            raw("GET", &s.url(&format!("/dashboard/{f}")), &[]).0,
            200,
            "{f}"
        );
    }
    let (st, hs, _) = raw("GET", &s.url("/dashboard"), &[]);
    assert_eq!((st, header(&hs, "location")), (308, Some("/dashboard/")));
    assert_eq!(raw("GET", &s.url("/dashboard/nope.js"), &[]).0, 404);
    let (st, _) = s.api("POST", "/dashboard/", None, None);
    assert_eq!(st, 405);
}

fn sum(points: &[Value], key: &str) -> u64 {
    points.iter().map(|p| p[key].as_u64().unwrap_or(0)).sum()
}
