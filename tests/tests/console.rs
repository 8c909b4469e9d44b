//! The web console (`/console`, `docs/console.md`) in a real browser:
//! headless Chromium driven through chromedriver (WebDriver), against a
//! real node. Each test looks at what a person would: the workers on the
//! overview and its live chart moving, a request whose worker was killed
//! mid-action showing two attempts in its journey, a poison request
//! dead-lettered and replayed from the console with its confirmation, the
//! flows with each step's figures, and the live tail.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them the tests say so and pass, except under CI (`CI`
//! set), where they must run. Screenshots of each page are written to
//! `target/console-screenshots/` (not committed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use zmanager::client::{Service, ServiceOptions};
use zmanager_tests::http::Http;
use zmanager_tests::node::{TestNode, free_port, node_with};
use zmanager_tests::temp::TempFile;
use zmanager_tests::{kill, runtime, workspace_root};

/// How long a page may take to show what a test waits for.
const LIMIT: Duration = Duration::from_secs(30);

/// `name` on the PATH, or where `variable` says.
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (and the test is skipped) when
/// either is missing, except under CI.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = program(
        "ZMANAGER_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = program("ZMANAGER_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have Chromium and chromedriver (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: install chromium and chromium-driver to run the console's browser tests"
            );
            None
        }
    }
}

/// chromedriver on a port of its own, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Self {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let until = Instant::now() + LIMIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on the node's console.
struct Console {
    client: Client,
    base: String,
    shots: PathBuf,
    _driver: Driver,
}

impl Console {
    async fn open(node: &TestNode, chromium: &Path, driver: &Path) -> Self {
        let driver = Driver::start(driver);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1300,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
        let shots = workspace_root().join("target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("a screenshot directory");
        let http = node.http.as_deref().expect("the node's HTTP server is on");
        Self {
            client,
            base: format!("http://{http}/console"),
            shots,
            _driver: driver,
        }
    }

    async fn goto(&self, view: &str) {
        self.client
            .goto(&format!("{}{view}", self.base))
            .await
            .expect("the page loads");
    }

    /// The value of the script `expression` once it is truthy (not null,
    /// false, 0 or ""), within [`LIMIT`]; fails with `what` and the page's
    /// text otherwise.
    async fn until(&self, what: &str, expression: &str) -> Value {
        let until = Instant::now() + LIMIT;
        let script = format!("return ({expression});");
        loop {
            let value = self
                .client
                .execute(&script, vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > until {
                let text = self
                    .client
                    .execute("return document.body.innerText;", vec![])
                    .await
                    .unwrap_or(Value::Null);
                panic!("the console never showed {what} ({expression}); the page said:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .text()
            .await
            .expect("its text")
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// The confirmation dialog's text, once it is open.
    async fn dialog(&self) -> String {
        let until = Instant::now() + LIMIT;
        loop {
            match self.client.get_alert_text().await {
                Ok(text) => return text,
                Err(_) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no confirmation dialog: {e}"),
            }
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png)
            .expect("the screenshot is written");
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

#[test]
fn the_overview_shows_the_workers_and_its_live_chart_moves() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let (node, _config) = node_with(2, "");
    let pids = node.wait_for_workers(2);
    let http = Http::of(&node);
    runtime().block_on(async {
        let shop = Service::connect(ServiceOptions::with_endpoints("shop", &node.endpoints))
            .await
            .expect("connect");
        shop.register(&["Shop~PUBLISH~".to_owned()], &["Echo".to_owned()])
            .await
            .expect("register");
        let console = Console::open(&node, &chromium, &driver).await;
        console.goto("#/").await;
        console
            .until("the registered service", "document.querySelector('#registered tr[data-service^=\"shop-\"]')")
            .await;
        let row = console.text("#registered tr[data-service^='shop-']").await;
        assert!(row.contains("up") && row.contains("Echo"), "{row}");
        console
            .until("both workers", "document.querySelectorAll('#workers tr[data-pid]').length === 2")
            .await;
        for pid in &pids {
            let row = console.text(&format!("#workers tr[data-pid='{pid}']")).await;
            assert!(row.contains("/ "), "credits used of its window: {row}");
        }
        let samples = |v: Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let before = samples(
            console
                .until("a sample", "document.querySelector('#chart-throughput')?.getAttribute('data-samples')")
                .await,
        );
        for n in 0..40 {
            let answer = http.post_json(&format!("/v1/flows/Echo/requests?wait=10s&id=chart-{n}"), &json!(n));
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        // The chart shows the node's own count of ended requests, and
        // takes new samples as time goes.
        console
            .until(
                "the 40 requests in the chart",
                "Number(document.querySelector('#chart-throughput')?.getAttribute('data-ended-total')) >= 40",
            )
            .await;
        let after = samples(
            console
                .until("a later sample", "document.querySelector('#chart-throughput')?.getAttribute('data-samples')")
                .await,
        );
        assert!(after > before, "the chart took new samples: {before} then {after}");
        let path = console
            .until(
                "a line drawn above zero",
                "[...document.querySelectorAll('#chart-throughput circle.ended')].length",
            )
            .await;
        assert!(path.as_u64().unwrap_or(0) >= 1, "{path}");
        // The page's own questions (the services it lists) are requests
        // too: at least the 40, then.
        let accepted: u64 = console.text("#accepted").await.trim().parse().expect("a count");
        assert!(accepted >= 40, "{accepted}");
        console.screenshot("overview").await;
        console.close().await;
        drop(shop);
    });
}

#[test]
fn a_request_whose_worker_was_killed_shows_two_attempts_in_its_journey() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let (node, _config) = node_with(2, "");
    node.wait_for_workers(2);
    let http = Http::of(&node);
    let started = http.post_json("/v1/flows/Sleep/requests?id=slow", &json!({ "ms": 3000 }));
    assert_eq!(started.status, 202, "{}", started.text());
    let on = http.poll("/v1/requests/http/slow", LIMIT, |a| {
        a.json()["state"] == "in_flight"
    });
    let pid = on.json()["worker_pid"].as_u64().expect("the worker's pid");
    kill("KILL", u32::try_from(pid).unwrap());
    let done = http.poll("/v1/requests/http/slow", Duration::from_secs(60), |a| {
        a.json()["status"] == "ok"
    });
    assert_eq!(done.json()["result"], json!({ "ms": 3000 }));

    runtime().block_on(async {
        let console = Console::open(&node, &chromium, &driver).await;
        // Found in the list of recent requests, and clicked.
        console.goto("#/requests").await;
        console
            .until("the request in the recent list", "document.querySelector('#recent tr[data-id=\"slow\"] a')")
            .await;
        let row = console.text("#recent tr[data-id='slow']").await;
        assert!(row.contains("completed") && row.contains("Sleep"), "{row}");
        console.screenshot("requests").await;
        console.click("#recent tr[data-id='slow'] a").await;
        let attempts = console
            .until(
                "two dispatches",
                "document.querySelectorAll('#journey li[data-event=\"dispatched\"]').length === 2 && \
                 [...document.querySelectorAll('#journey li')].map(li => li.dataset.event + ':' + li.dataset.attempt).join(' ')",
            )
            .await;
        assert_eq!(
            attempts,
            json!("accepted: dispatched:1 dispatched:2 completed:"),
            "accepted, the lost attempt, its redelivery, the end"
        );
        let second = console.text("#journey li[data-attempt='2']").await;
        assert!(second.contains("redelivery"), "{second}");
        assert!(second.contains("attempt 2"), "{second}");
        let completed = console.text("#journey li[data-event='completed']").await;
        assert!(completed.contains("ok"), "{completed}");
        // The envelope and payload, decoded from MessagePack.
        console.click("#journey li[data-event='accepted'] summary").await;
        let accepted = console.text("#journey li[data-event='accepted']").await;
        assert!(accepted.contains("\"ms\": 3000"), "the payload as JSON: {accepted}");
        assert!(accepted.contains("\"flow\": \"Sleep\""), "the envelope: {accepted}");
        console.screenshot("journey").await;
        console.close().await;
    });
}

#[test]
fn a_poison_request_is_dead_lettered_and_replayed_from_the_console() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let (node, _config) = node_with(1, "max_attempts = 3\n");
    let http = Http::of(&node);
    let marker = TempFile::new("fault", "");
    for id in ["poison-1", "poison-2", "poison-3"] {
        let dead = http.post_json(
            &format!("/v1/flows/Flaky/requests?wait=60s&id={id}"),
            &json!({ "marker": marker.path(), "id": id }),
        );
        assert_eq!(
            dead.json()["error"]["name"],
            "dead_lettered",
            "{}",
            dead.text()
        );
    }
    let replays = |seq: u64| -> Vec<Value> {
        let shown = http.get(&format!("/v1/dead-letters/{seq}"), &[]).json();
        shown["replays"].as_array().cloned().unwrap_or_default()
    };

    runtime().block_on(async {
        let console = Console::open(&node, &chromium, &driver).await;
        console.goto("#/dead-letters").await;
        console
            .until("three letters", "document.querySelectorAll('#dead-letters tr[data-seq]').length === 3")
            .await;
        // Each attempt's reason.
        console.click("#dead-letters tr[data-seq='1'] a").await;
        console
            .until("the attempts", "document.querySelectorAll('#attempts li').length === 3")
            .await;
        let reasons = console.text("#attempts").await;
        assert!(reasons.contains("panic"), "{reasons}");
        console.screenshot("dead-letter").await;

        // A replay asks first; dismissed, nothing happens.
        console.goto("#/dead-letters").await;
        console
            .until("the replay button", "document.querySelector('#dead-letters tr[data-seq=\"1\"] button.replay')")
            .await;
        console.click("#dead-letters tr[data-seq='1'] button.replay").await;
        let asked = console.dialog().await;
        assert!(asked.contains("Replay dead letter #1"), "{asked}");
        console.client.dismiss_alert().await.expect("dismissed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(replays(1).is_empty(), "a dismissed replay replays nothing");

        drop(marker); // the fault goes away
        console.click("#dead-letters tr[data-seq='1'] button.replay").await;
        console.dialog().await;
        console.client.accept_alert().await.expect("accepted");
        console
            .until(
                "#1 replayed",
                "document.querySelector('#dead-letters tr[data-seq=\"1\"] td.state')?.textContent.startsWith('replayed')",
            )
            .await;
        let once = replays(1);
        assert_eq!(once.len(), 1, "{once:?}");
        assert!(once[0]["outcome"].as_str().unwrap().starts_with("ok"), "{once:?}");

        // Replay all: the two left, each once.
        console.click("#replay-all").await;
        let asked = console.dialog().await;
        assert!(asked.contains("Replay every dead letter"), "{asked}");
        console.client.accept_alert().await.expect("accepted");
        console
            .until(
                "every letter replayed",
                "[...document.querySelectorAll('#dead-letters td.state')].filter(td => td.textContent.startsWith('replayed')).length === 3",
            )
            .await;
        console.screenshot("dead-letters").await;
        console.close().await;
    });
    for seq in 1..=3 {
        let replays = replays(seq);
        assert_eq!(replays.len(), 1, "dead letter #{seq} replayed exactly once");
        let outcome = replays[0]["outcome"].as_str().unwrap_or_default();
        assert!(outcome.starts_with("ok"), "#{seq}: {outcome}");
    }
}

#[test]
fn the_flows_show_each_step_and_the_live_tail_shows_what_is_published() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let (node, _config) = node_with(1, "");
    let http = Http::of(&node);
    for n in 0..5 {
        let answer = http.post_json(
            &format!("/v1/flows/Greeting/requests?wait=10s&id=g-{n}"),
            &json!({ "name": "ada" }),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // Every step of the flow was entered five times, the ones the worker
    // ran on its own as much as the one the Subject gave it.
    let flows = http.get("/v1/flows", &[]).json();
    let greeting = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Greeting")
        .cloned()
        .expect("the Greeting flow");
    let steps = greeting["steps"].as_array().unwrap();
    for step in &steps[1..] {
        assert_eq!(step["entered"], 5, "{greeting}");
        assert_eq!(step["failed"], 0, "{greeting}");
    }
    assert_eq!(greeting["ended"]["ok"], 5, "{greeting}");

    runtime().block_on(async {
        let console = Console::open(&node, &chromium, &driver).await;
        console.goto("#/flows").await;
        console
            .until(
                "the Greeting flow",
                "document.querySelector('section.flow[data-flow=\"Greeting\"] .step.action')",
            )
            .await;
        let shown = console.text("section.flow[data-flow='Greeting']").await;
        assert!(shown.contains("5 in"), "{shown}");
        let version = console
            .until(
                "the catalog version",
                "document.querySelector('#catalog-version')?.textContent",
            )
            .await;
        assert_eq!(version, json!("catalog version 1"));
        let announce = console.text("section.flow[data-flow='Announce']").await;
        assert!(announce.contains("@PUBLISH"), "{announce}");
        let ask = console.text("section.flow[data-flow='Ask']").await;
        assert!(ask.contains("@ASYNC"), "{ask}");
        console.screenshot("flows").await;

        console.goto("#/tail?prefix=Announce").await;
        console
            .until(
                "the tail live",
                "document.querySelector('#tail-status')?.textContent === 'live'",
            )
            .await;
        let sent = http.post_json(
            "/v1/flows/Announce/requests?wait=10s&id=told",
            &json!({ "news": "tail" }),
        );
        assert_eq!(sent.status, 200, "{}", sent.text());
        let item = console
            .until(
                "the publication",
                "document.querySelector('#tail li[data-topic]')?.textContent",
            )
            .await;
        let item = item.as_str().unwrap_or_default();
        assert!(item.contains("told") && item.contains("tail"), "{item}");
        console.screenshot("tail").await;
        console.close().await;
    });
}

#[test]
fn with_keys_the_console_asks_for_a_token_and_shows_what_it_grants() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let dir = zmanager_tests::temp::dir("console-secure");
    let (ops_token, ada_token) = ("ops-console-token", "ada-console-token");
    let key = || zmanager::security::new_pair().expect("CURVE keys").0;
    let grants = |extra: &str, token: &str| {
        format!(
            "{extra}http_token = {:?}\n",
            zmanager::security::token::show_digest(token)
        )
    };
    let ops_grants = grants("operate = true\nregister = true\n", ops_token);
    let ada_grants = grants("push = [\"Echo\"]\n", ada_token);
    let (ops_key, ada_key) = (key(), key());
    let (node, _) = zmanager_tests::secure::node_with(
        dir.path(),
        &[
            ("ops", &ops_key, &ops_grants),
            ("ada", &ada_key, &ada_grants),
        ],
    );
    runtime().block_on(async {
        let console = Console::open(&node, &chromium, &driver).await;
        console.goto("#/").await;
        // No token: the node answers 401, and the page asks for one.
        let said = console
            .until("the token form", "!document.querySelector('#token-form').hidden && document.querySelector('#error').textContent")
            .await;
        assert!(said.as_str().unwrap_or_default().contains("token"), "{said}");
        assert_eq!(
            console.until("no worker rows", "String(document.querySelectorAll('#workers tr[data-pid]').length)").await,
            json!("0"),
            "nothing shown without a token"
        );
        // A service without `operate` is refused what it does not grant.
        let field = console.client.find(Locator::Css("#token")).await.expect("the field");
        field.send_keys(ada_token).await.expect("typed");
        console.click("#token-form button").await;
        let refused = console
            .until("the refusal", "document.querySelector('#error').textContent.includes('operate') && document.querySelector('#error').textContent")
            .await;
        assert!(refused.as_str().unwrap_or_default().contains("\"ada\""), "{refused}");
        // The operator's token shows the node.
        field.clear().await.expect("cleared");
        field.send_keys(ops_token).await.expect("typed");
        console.click("#token-form button").await;
        console
            .until("the worker", "document.querySelectorAll('#workers tr[data-pid]').length === 1")
            .await;
        // Kept for the tab only: in session storage, never in the address.
        let url = console.client.current_url().await.expect("the address");
        assert!(!url.as_str().contains(ops_token), "{url}");
        console.close().await;
    });
}
