//! The operator's dashboard at `/admin/`: its files and security headers over HTTP, and the real
//! thing in headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`).
//!
//! Without Chromium or chromedriver on the PATH the browser test prints why and passes, unless
//! `STARSYNC_REQUIRE_BROWSER=1` (CI sets it and installs both). Its screenshot is written to
//! `<target dir>/dashboard.png`. The live tests open the page with `?poll=600`, so only the
//! admin event stream can explain an update they wait for.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::*;

/// An answer of the dashboard's files: status, headers we check, body.
fn fetch(app: &TestApp, path: &str) -> (u16, Vec<(String, String)>, String) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let resp = match agent.get(&app.url(path)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|h| {
            let v = resp.header(&h).unwrap_or_default().to_string();
            (h, v)
        })
        .collect();
    let status = resp.status();
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn dashboard_files_are_served_from_the_binary_with_security_headers() {
    let app = TestApp::spawn();
    for (path, kind) in [
        ("/admin/", "text/html"),
        ("/admin/app.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
        ("/admin/favicon.svg", "image/svg+xml"),
    ] {
        let (s, h, body) = fetch(&app, path);
        assert_eq!(s, 200, "{path}");
        assert!(!body.is_empty(), "{path}");
        assert!(
            header(&h, "content-type").is_some_and(|v| v.starts_with(kind)),
            "{path}: {h:?}"
        );
        let csp = header(&h, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(header(&h, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&h, "cache-control"), Some("no-store"), "{path}");
        assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"));
    }
    // Without the slash, the page's relative links would point at the site root.
    let (s, h, _) = fetch(&app, "/admin");
    assert_eq!(s, 308);
    assert_eq!(header(&h, "location"), Some("/admin/"));
    // Nothing else lives under /admin/: the API's JSON 404.
    let (s, _, body) = fetch(&app, "/admin/secrets.json");
    assert_eq!(s, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "not_found"
    );

    // The page loads nothing from elsewhere and runs no inline code (the CSP would block it;
    // this keeps the page honest), and the script never builds markup from strings.
    let (_, _, html) = fetch(&app, "/admin/");
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("http://") && !lower.contains("https://"));
    assert_eq!(lower.matches("<script").count(), 1);
    assert!(lower.contains("<script src=\"app.js\""));
    assert!(!lower.contains(" style="), "inline style");
    assert!(!lower.contains(" onclick=") && !lower.contains(" onload="));
    let (_, _, js) = fetch(&app, "/admin/app.js");
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "localStorage",
        "document.cookie",
    ] {
        assert!(!js.contains(banned), "app.js uses {banned}");
    }
}

// ---------------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------------

const REQUIRE_BROWSER: &str = "STARSYNC_REQUIRE_BROWSER";

/// The target directory (screenshots go there): the one the `starsync` binary was built in.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_starsync"));
    bin.parent()
        .and_then(Path::parent)
        .expect("binary under <target>/<profile>/")
        .to_path_buf()
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A headless Chromium session through chromedriver, spoken to with plain WebDriver requests
/// (JSON over HTTP: ureq is all it takes). Ends the session and the driver on drop.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Browser {
    /// `None` (after saying why) when Chromium or chromedriver is missing and not required.
    fn start() -> Option<Browser> {
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = on_path(&["chromedriver"]);
        let (chromium, driver) = match (chromium, driver) {
            (Some(c), Some(d)) => (c, d),
            _ => {
                let why = "chromium and chromedriver are not both on the PATH \
                           (apt-get install -y chromium chromium-driver)";
                if std::env::var(REQUIRE_BROWSER).is_ok_and(|v| v == "1") {
                    panic!("{REQUIRE_BROWSER}=1 but {why}");
                }
                eprintln!("SKIPPED the dashboard browser test: {why}");
                return None;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver: child,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(60))
                .build(),
            _profile: profile,
        };
        let deadline = std::time::Instant::now() + WAIT;
        while b.call("GET", "/status", None).map(|v| v["ready"] == true) != Ok(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps)).expect("new session");
        b.session = v["sessionId"].as_str().expect("sessionId").to_string();
        Some(b)
    }

    /// One WebDriver command; its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => Ok(r.into_json::<Value>().map_err(|e| e.to_string())?["value"].take()),
            Err(ureq::Error::Status(s, r)) => Err(format!(
                "{method} {path}: {s} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{method} {path}: {e}")),
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| self.fail(&e))
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs a script in the page (for reading state; the test acts through real clicks).
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        self.call(
            "POST",
            &path,
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_string))
    }

    /// Text shown by the first element matching `css` ("" when there is none). Read in one
    /// script call: the page re-renders tables while polling, so an element found in one
    /// request may be gone by the next.
    fn text(&self, css: &str) -> String {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "const e = document.querySelector(arguments[0]); \
                           return e ? e.innerText : '';",
                "args": [css],
            })),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Whether the first element matching `css` takes up room on the page (hidden ones don't).
    fn visible(&self, css: &str) -> bool {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "const e = document.querySelector(arguments[0]); \
                           return !!e && e.getClientRects().length > 0;",
                "args": [css],
            })),
        ) == true
    }

    /// Waits until `css` is shown, then clicks it as a user would (again if the page replaced
    /// the element between finding and clicking it).
    fn click(&self, css: &str) {
        self.wait(&format!("{css} is shown and clicked"), |b| {
            let Some(id) = b.find(css).filter(|_| b.visible(css)) else {
                return false;
            };
            let path = format!("/session/{}/element/{id}/click", b.session);
            match b.call("POST", &path, Some(json!({}))) {
                Ok(_) => true,
                Err(e) if e.contains("stale element") => false,
                Err(e) => b.fail(&e),
            }
        });
    }

    /// Picks the option with `value` in the `select` (waiting for it to be offered).
    fn choose(&self, select: &str, value: &str) {
        let css = format!("{select} option[value='{value}']");
        self.wait(&format!("{css} is offered"), |b| b.find(&css).is_some());
        let id = self.find(&css).unwrap();
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.wait(&format!("{css} is shown"), |b| b.visible(css));
        let id = self.find(css).unwrap();
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn wait(&self, what: &str, mut ok: impl FnMut(&Browser) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !ok(self) {
            if std::time::Instant::now() > deadline {
                self.fail(&format!("timed out waiting until {what}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn wait_text(&self, css: &str, needle: &str) {
        self.wait(&format!("{css} shows {needle:?}"), |b| {
            b.text(css).contains(needle)
        });
    }

    fn screenshot(&self, file: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, png).unwrap();
    }

    /// Fails the test with what the page showed (and a screenshot of it).
    fn fail(&self, why: &str) -> ! {
        let path = format!("/session/{}/execute/sync", self.session);
        let page = self
            .call(
                "POST",
                &path,
                Some(json!({"script": "return document.body.innerText", "args": []})),
            )
            .unwrap_or_default();
        let shot = target_dir().join("dashboard-failure.png");
        if let Ok(v) = self.call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        ) {
            use base64::Engine as _;
            if let Ok(png) =
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or(""))
            {
                let _ = std::fs::write(&shot, png);
            }
        }
        panic!(
            "{why}\n(screenshot: {})\npage text:\n{page}",
            shot.display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A manual conflict on a Ticket: A's version 2 {"v": "a"} is the server state; B's {"v": "b"}
/// lost and waits in history. Returns the nodes, the entity id and the conflict id.
fn manual_conflict(app: &TestApp) -> (TestNode, TestNode, String, String) {
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    a.sync(app, vec![upsert("Ticket", &u, 0, json!({"v": "base"}))]);
    b.drain(app);
    a.sync(app, vec![upsert("Ticket", &u, 1, json!({"v": "a"}))]);
    let ex = b.sync(app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    let id = ex.body["conflicts"][0]["conflict_id"]
        .as_str()
        .unwrap()
        .to_string();
    (a, b, u, id)
}

#[test]
fn dashboard_in_chromium_signs_in_manages_nodes_and_resolves_a_conflict() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let app = TestApp::spawn_with("[conflicts.types.Ticket]\nstrategy = \"manual\"\n", &[]);
    let (a, _b, u, conflict_id) = manual_conflict(&app);
    // A node whose name is markup: it must show as text.
    let evil_name = "<img src=x id=xss onerror=alert(1)>";
    let (s, body) = app.post(
        "/api/sync/register",
        Some(ADMIN),
        &json!({"code": "EVIL", "name": evil_name}),
    );
    assert_eq!(s, 201, "{body}");
    let evil_id = body["node_id"].as_str().unwrap().to_string();

    // Sign in: a wrong token and a node token are refused with a reason.
    browser.goto(&app.url("/admin/"));
    browser.type_into("#token-input", "not-the-token");
    browser.click("#signin-button");
    browser.wait_text("#signin-error", "did not accept");
    browser.type_into("#token-input", &a.token);
    browser.click("#signin-button");
    browser.wait_text("#signin-error", "node token");
    assert!(browser.visible("#signin-view"));
    browser.type_into("#token-input", ADMIN);
    browser.click("#signin-button");
    browser.wait_text("#ov-nodes", "3");
    browser.wait_text("#ov-conflicts", "1");
    // The token is in this tab's session storage and nowhere else the page can put it.
    let stored = browser.js(
        "return [sessionStorage.getItem('starsync.adminToken'), localStorage.length, \
         document.cookie, location.href]",
    );
    assert_eq!(stored[0], ADMIN);
    assert_eq!(stored[1], 0);
    assert_eq!(stored[2], "");
    assert!(!stored[3].as_str().unwrap().contains(ADMIN));
    assert_eq!(
        browser.js("return document.getElementById('token-input').value"),
        ""
    );

    // Nodes: every registered node, the markup name as text.
    browser.click("a[href='#nodes']");
    let row = |id: &str| format!("#nodes-table tr[data-node-id='{id}']");
    browser.wait_text(&row(&a.id), "A");
    browser.wait_text(&row(&evil_id), evil_name);
    assert_eq!(
        browser.js("return document.getElementById('xss')"),
        Value::Null
    );

    // Rotate A's token: confirmed, shown once, the old one refused at once.
    browser.click(&format!("{} .node-rotate", row(&a.id)));
    browser.click("#confirm-ok");
    browser.wait("the new token is shown", |b| {
        b.text("#new-token").len() >= 32
    });
    let new_token = browser.text("#new-token");
    assert_ne!(new_token, a.token);
    let status_path = format!("/api/sync/status/{}", a.id);
    assert_eq!(app.get(&status_path, Some(&a.token)).0, 401);
    assert_eq!(app.get(&status_path, Some(&new_token)).0, 200);
    browser.click("#token-done");
    assert!(!browser.visible("#token-panel"));
    assert_eq!(
        browser.js("return document.getElementById('new-token').textContent"),
        ""
    );

    // Disable EVIL (confirmed), then see it disabled in the page and through the API.
    browser.click(&format!("{} .node-disable", row(&evil_id)));
    browser.click("#confirm-ok");
    browser.wait_text(&row(&evil_id), "disabled");
    let (_, nodes) = app.get("/api/sync/nodes", Some(ADMIN));
    let evil = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == json!(evil_id))
        .unwrap();
    assert_eq!(evil["active"], false);

    // Conflicts: open the manual one, both versions side by side, resolve with history.
    browser.click("a[href='#conflicts']");
    let conflict_row = format!("#conflicts-table tr[data-id='{conflict_id}']");
    browser.wait_text(&conflict_row, "Ticket");
    browser.click(&conflict_row);
    browser.wait_text("#server-json", "\"v\": \"a\"");
    browser.wait_text("#history-json", "\"v\": \"b\"");
    browser.wait_text("#cd-server-title", "v2");
    let shot = target_dir().join("dashboard.png");
    browser.screenshot(&shot);
    eprintln!("dashboard screenshot: {}", shot.display());
    // Edited text that is not a JSON object is refused in the page, and nothing is resolved.
    browser.click("#cd-edit summary");
    browser.type_into("#resolve-json", "[1, 2]");
    browser.click("#resolve-edited");
    browser.wait_text("#resolve-result", "must be a JSON object");
    assert_eq!(app.conflicts("?unresolved=true").len(), 1);

    browser.click("#resolve-history");
    browser.wait_text("#resolve-result", "now version 3");

    // Through the API: the row resolved by the admin, the entity holds the losing version.
    let (_, list) = app.get(&format!("/api/sync/conflicts?entity_uuid={u}"), Some(ADMIN));
    let row = list["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(conflict_id))
        .unwrap()
        .clone();
    assert_eq!(row["resolved_by"], "admin", "{row}");
    assert_eq!(row["conflict_resolution"], "manual:admin", "{row}");
    let (s, entity) = app.entity("Ticket", &u);
    assert_eq!(s, 200);
    assert_eq!(entity["version"], 3);
    assert_eq!(entity["data"], json!({"v": "b"}));

    // The entity browser shows it too.
    browser.click("a[href='#entities']");
    browser.choose("#entity-type", "Ticket");
    let entity_row = format!("#entities-table tr[data-id='{u}']");
    browser.wait_text(&entity_row, "\"v\":\"b\"");
    browser.click(&entity_row);
    browser.wait_text("#ed-meta", "version 3");

    browser.click("a[href='#overview']");
    browser.wait_text("#ov-conflicts", "0");
    browser.screenshot(&target_dir().join("dashboard-overview.png"));

    // Signing out forgets the token.
    browser.click("#signout");
    browser.wait("the sign-in form is back", |b| b.visible("#signin-view"));
    assert_eq!(
        browser.js("return sessionStorage.getItem('starsync.adminToken')"),
        Value::Null
    );
}

/// Signs in with the admin token at `path` (under the hub), and waits for the first figures.
fn sign_in(browser: &Browser, app: &TestApp, path: &str) {
    browser.goto(&app.url(path));
    browser.type_into("#token-input", ADMIN);
    browser.click("#signin-button");
    browser.wait("signed in", |b| b.visible("#signout"));
}

/// The live path: with polling set to every 10 minutes, a node registered and a conflict made
/// through the API show up in the open page within seconds, which only the admin event stream
/// (read with fetch, the token in a header) can explain.
#[test]
fn dashboard_in_chromium_shows_events_from_the_stream_without_waiting_for_a_poll() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let app = TestApp::spawn_with("[conflicts.types.Ticket]\nstrategy = \"manual\"\n", &[]);
    sign_in(&browser, &app, "/admin/?poll=600#overview");
    browser.wait_text("#ov-nodes", "0");
    browser.wait_text("#live-indicator", "live");
    browser.wait_text("#status-line", "live");
    let started = std::time::Instant::now();

    // Overview: a node event refreshes the figures.
    app.register("X");
    browser.wait_text("#ov-nodes", "1");
    browser.wait_text("#ov-nodes-sub", "1 active");

    // Conflicts: shown empty, then the conflict (exchange and conflict events) appears, and
    // the count in the navigation with it.
    browser.click("a[href='#conflicts']");
    browser.wait("the empty list is shown", |b| b.visible("#conflicts-empty"));
    assert!(!browser.visible("#nav-conflicts"));
    let (_a, _b, _u, conflict_id) = manual_conflict(&app);
    let conflict_row = format!("#conflicts-table tr[data-id='{conflict_id}']");
    browser.wait_text(&conflict_row, "Ticket");
    browser.wait_text(&conflict_row, "unresolved");
    // By the code of the node whose change lost (registered after the page read the nodes).
    browser.wait("the row names node B", |b| {
        b.js(&format!(
            "return document.querySelector(\"{conflict_row}\").cells[3].textContent"
        )) == "B"
    });
    browser.wait_text("#nav-conflicts", "1");
    assert!(browser.visible("#nav-conflicts"));
    assert!(!browser.visible("#conflicts-empty"));
    // Far inside the 600 s poll interval (the waits above give up after 20 s each).
    assert!(started.elapsed() < std::time::Duration::from_secs(300));
    assert_eq!(browser.text("#live-indicator"), "live");

    // The token went in headers, in no address (the open stream is not listed until it ends,
    // but every request that finished is).
    let urls = browser.js("return performance.getEntriesByType('resource').map(e => e.name)");
    let urls: Vec<&str> = urls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(urls.iter().any(|u| u.contains("/api/sync/conflicts")));
    assert!(urls.iter().all(|u| !u.contains(ADMIN)), "{urls:?}");
    browser.screenshot(&target_dir().join("dashboard-live.png"));

    // Signing out closes the stream with the rest.
    browser.click("#signout");
    browser.wait("the sign-in form is back", |b| b.visible("#signin-view"));
    assert!(!browser.visible("#live-indicator"));
}

/// Without the stream (the hub refuses every stream here: 503 `too_many_streams`), the page
/// says "polling", stays signed in and keeps up by polling at the configured interval.
#[test]
fn dashboard_in_chromium_polls_while_the_event_stream_is_refused() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let app = TestApp::spawn_with("", &[("STARSYNC_MAX_EVENT_STREAMS", "0")]);
    let (s, body) = app.get("/api/sync/events", Some(ADMIN));
    assert_eq!(s, 503, "{body}");
    sign_in(&browser, &app, "/admin/?poll=1#overview");
    browser.wait_text("#ov-nodes", "0");
    browser.wait_text("#live-indicator", "polling");
    browser.wait_text("#status-line", "refreshes every 1 s");
    app.register("X");
    browser.wait_text("#ov-nodes", "1");
    assert_eq!(browser.text("#live-indicator"), "polling");
    assert!(
        browser.visible("#signout"),
        "a refused stream must not sign out"
    );
}

/// The hub restarts under an open dashboard (same address): the stream ends, the page
/// reconnects by itself, and a node registered afterwards shows up through the new stream
/// (polling is set to every 10 minutes, so nothing else can explain it).
#[test]
fn dashboard_in_chromium_reconnects_its_stream_after_a_hub_restart() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let app = TestApp::spawn_with("", &[("STARSYNC_BIND", bind.as_str())]);
    sign_in(&browser, &app, "/admin/?poll=600#nodes");
    browser.wait_text("#live-indicator", "live");
    browser.wait("the empty node list is shown", |b| {
        b.text("#nodes-table tbody").contains("No node")
    });

    let app = app.restart();
    assert_eq!(app.port, port);
    // Reconnected (after about a second of backoff) to the new process's stream.
    let x = app.register("X");
    let row = format!("#nodes-table tr[data-node-id='{}']", x.id);
    browser.wait_text(&row, "X");
    browser.wait_text("#live-indicator", "live");
    assert!(browser.visible("#signout"));
}
