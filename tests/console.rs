//! The web console at `/ui`, in a real browser: Debian's headless Chromium driven
//! through chromedriver (WebDriver, the `fantoccini` crate) against the real
//! daemon and real plugins. Outcomes that matter are checked through the HTTP
//! API (the log), not only in the page. Each test saves screenshots under
//! `target/console-screenshots/`.
//!
//! `cargo xtask test` installs `chromium` and `chromium-driver`;
//! `EVHOST_CHROMIUM` / `EVHOST_CHROMEDRIVER` name other binaries.

mod daemon_support;
mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use daemon_support::{Daemon, Options, event};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser at a time: each is a few hundred MB and the machine is small.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: run `cargo xtask test` (it installs Debian's chromium and \
         chromium-driver) or `apt-get install chromium chromium-driver`, or set {var}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn screenshot_dir() -> PathBuf {
    let dir = support::workspace_root()
        .join("target")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A chromedriver with one headless Chromium session. Dropping it (also while
/// unwinding from a failed assertion) ends the session and kills chromedriver's
/// whole process group, Chromium included.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    base: String,
    test: &'static str,
    _profile: tempfile::TempDir,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Browser {
    fn open(test: &'static str, daemon: &Daemon) -> Browser {
        let one = ONE_BROWSER.lock().unwrap_or_else(PoisonError::into_inner);
        let chromium = binary("EVHOST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("EVHOST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Drop can kill Chromium with it.
            .process_group(0);
        // SAFETY: prctl(2) only, between fork and exec: chromedriver dies with the
        // test process even when that is killed outright.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let driver = cmd.spawn().expect("chromedriver starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            base: daemon.url.clone(),
            test,
            _profile: profile,
            _one: one,
        };
        assert!(
            support::wait_for(Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "chromedriver did not listen on {port} within 30 s"
        );
        // Without the background-networking flags Chromium reaches out at start,
        // which this closed network refuses.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,860",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = browser
            .rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url),
            )
            .expect("a Chromium session through chromedriver");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.rt
            .block_on(self.client().goto(&url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    fn screenshot(&self, name: &str) {
        match self.rt.block_on(self.client().screenshot()) {
            Ok(png) => {
                let path = screenshot_dir().join(format!("{}-{name}.png", self.test));
                std::fs::write(&path, png).expect("screenshot written");
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        self.rt.block_on(async {
            let el = self.client().find(Locator::Css(css)).await.ok()?;
            el.text().await.ok()
        })
    }

    /// Waits until an element matching `css` shows `wanted`; answers its text.
    /// On timeout: a screenshot and the page's text in the panic.
    fn wait_text(&self, css: &str, wanted: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self.text(css)
                && text.contains(wanted)
            {
                return text;
            }
            if Instant::now() >= deadline {
                self.screenshot("failure");
                panic!(
                    "no {css} showing {wanted:?} within {timeout:?}; it shows {:?}\npage:\n{}",
                    self.text(css),
                    self.text("body").unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                self.client()
                    .wait()
                    .at_most(Duration::from_secs(10))
                    .for_element(Locator::Css(css))
                    .await?
                    .click()
                    .await
            })
            .unwrap_or_else(|e| {
                self.screenshot("failure");
                panic!("cannot click {css}: {e}")
            });
    }

    fn fill(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self
                    .client()
                    .wait()
                    .at_most(Duration::from_secs(10))
                    .for_element(Locator::Css(css))
                    .await?;
                el.clear().await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("cannot fill {css}: {e}"));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // SAFETY: kill(2) of the process group chromedriver leads (it was spawned
        // with process_group(0), so its pgid is its pid and holds only it and Chromium).
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn start(root: &std::path::Path, plugins: &[(&str, &str)], token: Option<&str>) -> Daemon {
    let plugins = (!plugins.is_empty()).then(|| daemon_support::plugin_dir(root, plugins));
    Daemon::start(
        &root.join("data"),
        Options {
            plugins,
            token: token.map(str::to_owned),
            ..Options::default()
        },
    )
}

fn plugin(d: &Daemon, name: &str) -> Value {
    let (_, body) = d.get("/v1/plugins");
    body["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

const WELCOME_GRANTS: &str = "[grants]\nemit = [\"notification.*\"]\n";

#[test]
fn overview_lists_the_running_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        &[
            ("welcome", WELCOME_GRANTS),
            ("counter", "[grants]\nstate = true\n"),
        ],
        None,
    );
    assert!(
        d.stdout()
            .iter()
            .any(|l| l == &format!("console at {}/ui", d.url)),
        "the daemon prints the console's URL: {:?}",
        d.stdout()
    );
    let (status, body) = d.publish(&event(
        "user.created",
        json!({"name": "Ada", "email": "ada@example.com"}),
    ));
    assert_eq!(status, 201, "{body}");
    assert!(support::wait_for(Duration::from_secs(60), || {
        plugin(&d, "welcome")["processed"] == 1
    }));

    let b = Browser::open("overview", &d);
    b.goto("/ui");
    let welcome = b.wait_text(
        r#"tr[data-plugin="welcome"]"#,
        "running",
        Duration::from_secs(20),
    );
    let counter = b.wait_text(
        r#"tr[data-plugin="counter"]"#,
        "running",
        Duration::from_secs(20),
    );
    assert!(welcome.contains("0.1.0"), "version shown: {welcome}");
    assert!(counter.contains("counter"), "{counter}");
    b.wait_text(
        r#"tr[data-topic="user-events"]"#,
        "user-events",
        Duration::from_secs(10),
    );
    b.wait_text("#health", "200", Duration::from_secs(10));
    b.screenshot("overview");

    // The plugin's page: grants and the lag of each partition it consumes.
    b.goto("/ui/#/plugins/welcome");
    let details = b.wait_text("#plugin-details", "notification.*", Duration::from_secs(20));
    assert!(details.contains("load number"), "{details}");
    b.wait_text("#partitions", "user-events", Duration::from_secs(10));
    b.screenshot("plugin");
}

#[test]
fn a_dead_letter_replayed_from_the_ui_commits_its_effect() {
    let dir = tempfile::tempdir().unwrap();
    // welcome without its emit grant: the event is parked.
    let d = start(dir.path(), &[("welcome", "")], None);
    let (status, body) = d.publish(&event(
        "user.created",
        json!({"name": "Grace", "email": "grace@example.com"}),
    ));
    assert_eq!(status, 201, "{body}");
    let mut letters = Vec::new();
    assert!(
        support::wait_for(Duration::from_secs(60), || {
            letters = d.get("/v1/dlq?plugin=welcome").1["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            letters.len() == 1
        }),
        "one letter parked: {letters:?}"
    );
    let id = letters[0]["id"].as_u64().unwrap();
    // The operator grants the emit; the new version is deployed.
    let before = plugin(&d, "welcome")["load_number"].as_u64().unwrap();
    std::fs::write(
        dir.path().join("plugins").join("welcome.toml"),
        WELCOME_GRANTS,
    )
    .unwrap();
    assert!(support::wait_for(Duration::from_secs(30), || {
        plugin(&d, "welcome")["load_number"].as_u64() > Some(before)
    }));
    assert!(d.read_all("notification-events", 0).is_empty());

    let b = Browser::open("dlq-replay", &d);
    b.goto("/ui/#/dlq?plugin=welcome");
    let letter = format!(r#"details.letter[data-id="{id}"]"#);
    let summary = b.wait_text(&letter, "rejected", Duration::from_secs(20));
    assert!(summary.contains("user.created"), "{summary}");
    b.click(&format!("{letter} > summary"));
    b.wait_text(&letter, "may not emit", Duration::from_secs(5));
    b.click(&format!(r#"{letter} button[data-action="replay"]"#));
    b.wait_text("#confirm-text", &format!("#{id}"), Duration::from_secs(5));
    b.screenshot("confirm");
    b.click("#confirm-ok");
    b.wait_text("#dlq-result", "succeeded", Duration::from_secs(30));
    b.wait_text("#letters", "No dead letters", Duration::from_secs(10));
    b.screenshot("replayed");

    // The effect is in the log, once, and the letter is gone.
    let notes = d.read_all("notification-events", 0);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["data"]["to"], "grace@example.com");
    assert_eq!(d.get("/v1/dlq").1["dead_letters"], json!([]));
}

#[test]
fn a_live_tail_shows_an_event_published_after_the_page_opened() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[], None);
    let before = json!({"specversion": "1.0", "type": "order.placed", "source": "test",
        "id": "before-the-page", "data": {}});
    assert_eq!(d.publish(&before).0, 201);

    let b = Browser::open("live-tail", &d);
    b.goto("/ui/#/topics/order-events");
    b.wait_text("#tail-state", "live", Duration::from_secs(20));
    let after = json!({"specversion": "1.0", "type": "order.placed", "source": "test",
        "id": "after-the-page", "subject": "o-42", "data": {"total": 42}});
    let published = Instant::now();
    assert_eq!(d.publish(&after).0, 201);
    let shown = b.wait_text("#tail-events", "after-the-page", Duration::from_secs(2));
    let took = published.elapsed();
    assert!(took < Duration::from_secs(2), "shown after {took:?}");
    assert!(
        !shown.contains("before-the-page"),
        "the tail shows only new events: {shown}"
    );
    // The stored events by offset show both.
    b.wait_text("#read-events", "before-the-page", Duration::from_secs(5));
    b.screenshot("tail");
    eprintln!("live tail: shown {took:?} after the publish was acknowledged");
}

#[test]
fn with_a_token_the_page_asks_for_it_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[], Some("s3cret-token"));

    let b = Browser::open("token", &d);
    b.goto("/ui/#/publish");
    b.fill("#publish input[name=topic]", "audit");
    b.fill("#publish input[name=type]", "audit.recorded");
    b.fill("#publish input[name=id]", "from-the-console");
    b.fill("#publish textarea[name=data]", r#"{"who":"operator"}"#);
    b.click("#publish-button");
    // The publish was refused (401): the page asks for the token.
    b.wait_text(
        "#token-reason",
        "Authorization: Bearer",
        Duration::from_secs(10),
    );
    b.fill("#token-input", "wrong-token");
    b.click("#token-ok");
    b.wait_text("#token-error", "not valid", Duration::from_secs(10));
    b.screenshot("refused");
    assert_eq!(
        d.get("/v1/topics/audit/events").0,
        404,
        "nothing published with a wrong token"
    );
    b.fill("#token-input", "s3cret-token");
    b.click("#token-ok");
    b.wait_text("#publish-result", "offset 0", Duration::from_secs(10));
    b.screenshot("accepted");
    let events = d.read_all("audit", 0);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], "from-the-console");
    assert_eq!(events[0]["data"], json!({"who": "operator"}));
    // The token never appears in a URL.
    let url = b.rt.block_on(b.client().current_url()).unwrap();
    assert!(!url.as_str().contains("s3cret"), "{url}");
}

/// With `protect-reads`, reads need the token too: the console's own files are
/// still served (a navigation cannot carry a header), the page asks for the token
/// on the first refused read, and the live tail — which `EventSource` could not
/// authorize — streams with it as a header.
#[test]
fn with_protected_reads_the_page_reads_and_tails_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evhost.toml");
    std::fs::write(&config, "[api]\ntoken = \"r3ad\"\nprotect-reads = true\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    let (status, headers, html) =
        daemon_support::request_full("GET", &format!("{}/ui/", d.url), &[], None);
    assert_eq!(status, 200, "{html}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/html")),
        "{headers:?}"
    );
    assert_eq!(d.get("/v1/topics").0, 401);
    let auth = [
        ("authorization", "Bearer r3ad"),
        ("content-type", "application/cloudevents+json"),
    ];
    let publish = |id: &str| {
        let e = json!({"specversion": "1.0", "type": "order.placed", "source": "test",
            "id": id, "data": {}});
        let (status, body) = d.request("POST", "/v1/events", &auth, Some(e.to_string().as_bytes()));
        assert_eq!(status, 201, "{body}");
    };
    publish("first");

    let b = Browser::open("protected-reads", &d);
    b.goto("/ui/#/topics/order-events");
    b.wait_text(
        "#token-reason",
        "Authorization: Bearer",
        Duration::from_secs(10),
    );
    b.fill("#token-input", "r3ad");
    b.click("#token-ok");
    b.wait_text("#read-events", "first", Duration::from_secs(10));
    b.wait_text("#tail-state", "live", Duration::from_secs(10));
    publish("second");
    b.wait_text("#tail-events", "second", Duration::from_secs(2));
    b.screenshot("tail");
}
