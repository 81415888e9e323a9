//! The seed's order flow end to end: the real `evhost run` with the real
//! `inventory`, `payment`, `order-saga` and `notification` components, the
//! operator files of `demo/` (sidecars, JSON Schemas), orders published over
//! HTTP. Plugin state (stock levels, notification counters) is read from the
//! daemon's own log file after it stopped.

mod daemon_support;
#[path = "../xtask/src/gateway.rs"]
mod gateway;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon_support::{Daemon, Options, plugin_dir};
use evhost::log::{EventLog, LogConfig, RedbLog};
use serde_json::{Value, json};
use support::wait_for;

const PLUGINS: [&str; 4] = ["inventory", "payment", "order-saga", "notification"];

fn demo_dir() -> PathBuf {
    support::workspace_root().join("demo")
}

/// The demo's sidecar of `plugin`, with `[config]` entries replaced and any
/// extra top-level TOML appended.
fn sidecar(plugin: &str, config: &[(&str, &str)], extra: &str) -> String {
    let path = demo_dir().join("plugins").join(format!("{plugin}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    if !config.is_empty() {
        let cfg = table
            .entry("config")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        for (k, v) in config {
            cfg.as_table_mut()
                .unwrap()
                .insert((*k).to_owned(), toml::Value::String((*v).to_owned()));
        }
    }
    format!("{}\n{extra}", toml::to_string(&table).unwrap())
}

/// Every schema file of `demo/schemas/<type>/<version>.json`.
fn demo_schemas() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for ty in std::fs::read_dir(demo_dir().join("schemas")).unwrap() {
        let ty = ty.unwrap().path();
        for file in std::fs::read_dir(&ty).unwrap() {
            let file = file.unwrap().path();
            let schema = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            out.push((
                ty.file_name().unwrap().to_string_lossy().into_owned(),
                file.file_stem().unwrap().to_string_lossy().into_owned(),
                schema,
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// A daemon running the four plugins with the demo's sidecars (plus the
/// test's overrides) and the demo's schemas registered.
struct Shop {
    /// The fake payment gateway `payment` charges at (its sidecar grants it).
    gateway: gateway::Gateway,
    dir: tempfile::TempDir,
    options: Options,
    daemon: Option<Daemon>,
}

impl Shop {
    fn start(sidecars: &[(&str, String)], config: &str) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let gateway = gateway::Gateway::start("127.0.0.1:0").unwrap();
        // The demo's sidecars name the gateway at a placeholder address.
        let at_gateway = |text: String| text.replace("127.0.0.1:9000", &gateway.addr.to_string());
        let files: Vec<(&str, String)> = PLUGINS
            .iter()
            .map(|p| {
                let custom = sidecars.iter().find(|(name, _)| name == p);
                (
                    *p,
                    at_gateway(custom.map_or_else(|| sidecar(p, &[], ""), |(_, s)| s.clone())),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, s)| (*p, s.as_str())).collect();
        let plugins = plugin_dir(dir.path(), &refs);
        let config_file = dir.path().join("evhost.toml");
        std::fs::write(&config_file, config).unwrap();
        let options = Options {
            plugins: Some(plugins),
            config: Some(config_file),
            ..Options::default()
        };
        let daemon = Daemon::start(&dir.path().join("data"), options.clone());
        for (ty, version, schema) in demo_schemas() {
            let (status, body) = daemon.request(
                "PUT",
                &format!("/v1/schemas/{ty}/{version}"),
                &[("content-type", "application/json")],
                Some(schema.to_string().as_bytes()),
            );
            assert!(
                status == 201 || status == 200,
                "{ty}/{version}: {status} {body}"
            );
        }
        Shop {
            gateway,
            dir,
            options,
            daemon: Some(daemon),
        }
    }

    fn standard() -> Shop {
        Shop::start(&[], "")
    }

    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs")
    }

    /// Publishes `order.created` for `order` (its subject, the partition key) and
    /// returns the event's id: the flow's correlation id.
    fn order(&self, order: &str, data: Value) -> String {
        let mut data = data;
        data["orderId"] = order.into();
        let (status, body) = self.d().publish(&json!({
            "specversion": "1.0", "type": "order.created", "source": "shop-frontend",
            "subject": order, "data": data,
        }));
        assert_eq!(status, 201, "{body}");
        body["events"][0]["id"].as_str().unwrap().to_owned()
    }

    /// Every stored event of every topic.
    fn all_events(&self) -> Vec<Value> {
        let (status, topics) = self.d().get("/v1/topics");
        assert_eq!(status, 200);
        let mut out = Vec::new();
        for t in topics["topics"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            for p in t["partitions"].as_array().unwrap() {
                out.extend(
                    self.d()
                        .read_all(name, p["partition"].as_u64().unwrap() as u32),
                );
            }
        }
        out
    }

    /// The events of one flow (correlation id).
    fn flow(&self, correlation: &str) -> Vec<Value> {
        self.all_events()
            .into_iter()
            .filter(|e| e["correlationid"] == correlation)
            .collect()
    }

    /// Waits until the flow holds an event of each of `types`.
    fn wait_flow(&self, correlation: &str, types: &[&str]) -> Vec<Value> {
        let mut flow = Vec::new();
        let done = wait_for(Duration::from_secs(60), || {
            flow = self.flow(correlation);
            types.iter().all(|t| flow.iter().any(|e| e["type"] == *t))
        });
        assert!(
            done,
            "flow {correlation} did not reach {types:?}; it has {:?}\nplugins: {}\nstderr:\n{}",
            type_list(&flow),
            self.d().get("/v1/plugins").1,
            self.d().stderr().join("\n")
        );
        flow
    }

    /// Waits until every plugin has consumed everything and no topic grows any more.
    fn settle(&self) {
        let mut last = Vec::new();
        let mut stable_since = Instant::now();
        let settled = wait_for(Duration::from_secs(60), || {
            let now = self.d().log_fingerprint();
            if now != last {
                last = now;
                stable_since = Instant::now();
                return false;
            }
            let (_, plugins) = self.d().get("/v1/plugins");
            let idle = plugins["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lag"] == 0);
            // Longer than the dispatcher's topic scan, so a new topic has its consumers.
            idle && stable_since.elapsed() > Duration::from_millis(600)
        });
        assert!(
            settled,
            "the flow did not settle: {}",
            self.d().get("/v1/plugins").1
        );
    }

    /// `kill -9`, then a new daemon on the same data and plugins.
    fn kill9_and_restart(&mut self) {
        self.daemon.take().expect("running").kill9();
        self.daemon = Some(Daemon::start(&self.data(), self.options.clone()));
    }

    /// Sum of the end offsets of `topic`'s partitions.
    fn end_of(&self, topic: &str) -> u64 {
        self.d()
            .log_fingerprint()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, _, end)| end)
            .sum()
    }

    /// Publishes `orders` from 8 threads at once.
    fn publish_concurrently(&self, orders: &[Planned]) {
        std::thread::scope(|s| {
            for chunk in orders.chunks(orders.len().div_ceil(8)) {
                s.spawn(move || {
                    for o in chunk {
                        self.order(&o.id, o.data());
                    }
                });
            }
        });
    }

    /// Waits until `n` notifications were sent (the last step of every flow).
    fn wait_notified(&self, n: u64) {
        let done = wait_for(Duration::from_secs(120), || {
            self.end_of("notification-events") >= n
        });
        assert!(
            done,
            "not every order was notified: {}",
            self.d().get("/v1/plugins").1
        );
    }

    /// Stops the daemon (SIGTERM) and opens its log to read plugin state.
    fn stop(&mut self) -> PluginState {
        self.daemon.take().expect("running").stop();
        let log = RedbLog::open(self.data().join("log.redb"), LogConfig::default()).unwrap();
        PluginState(log)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Plugin state of a stopped daemon.
struct PluginState(RedbLog);

impl PluginState {
    fn get(&self, plugin: &str, key: &str) -> Option<Value> {
        self.0
            .state_get(plugin, key)
            .wait()
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn stock(&self, product: &str) -> Option<u64> {
        self.get("inventory", &format!("stock/{product}"))
            .map(|v| v.as_u64().unwrap())
    }

    fn count(&self, key: &str) -> u64 {
        self.get("notification", key)
            .map_or(0, |v| v.as_u64().unwrap())
    }
}

fn type_list(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn one<'a>(flow: &'a [Value], ty: &str) -> &'a Value {
    let found: Vec<&Value> = flow.iter().filter(|e| e["type"] == ty).collect();
    assert_eq!(found.len(), 1, "one {ty} expected in {:?}", type_list(flow));
    found[0]
}

/// Every event of `flow` but the root was caused by another event of the same
/// flow, and following causation ids from any event reaches the root.
fn assert_causation_chain(flow: &[Value], root: &str) {
    let by_id: HashMap<&str, &Value> = flow
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_id.len(), flow.len(), "event ids are unique");
    for e in flow {
        let mut at = e;
        let mut hops = 0;
        while at["id"] != root {
            let cause = at["causationid"]
                .as_str()
                .unwrap_or_else(|| panic!("{} ({}) has no causationid", at["type"], at["id"]));
            at = by_id.get(cause).unwrap_or_else(|| {
                panic!(
                    "{} ({}) names cause {cause}, which is not in the flow {:?}",
                    at["type"],
                    at["id"],
                    type_list(flow)
                )
            });
            hops += 1;
            assert!(hops <= flow.len(), "a causation cycle at {}", e["id"]);
        }
    }
}

fn caused_by(event: &Value, cause: &Value) -> bool {
    event["causationid"] == cause["id"]
}

/// The seed's "Order Processing Flow" integration test — an order is
/// published and `order.created` with its order id is in the log — carried on
/// to the end of the flow: payment requested for the order's amount, paid,
/// `order.completed`, the customer notified, the stock taken.
#[test]
fn order_processing_flow_completes_a_payable_order() {
    let mut shop = Shop::standard();
    let flow_id = shop.order(
        "o-1",
        json!({"customerId": "test-customer", "totalAmount": 42.5,
               "items": [{"productId": "apple", "quantity": 1}]}),
    );

    // The seed's expectation: the published events contain order.created with the order id.
    let published = shop.d().read_all("order-events", 0);
    assert!(
        published
            .iter()
            .any(|e| e["type"] == "order.created" && e["data"]["orderId"] == "o-1"),
        "{published:?}"
    );

    let flow = shop.wait_flow(&flow_id, &["order.completed", "notification.sent"]);
    shop.settle();
    let flow = {
        let settled = shop.flow(&flow_id);
        assert_eq!(settled.len(), flow.len(), "nothing after the notification");
        settled
    };
    let mut types = type_list(&flow);
    types.sort();
    assert_eq!(
        types,
        [
            "inventory.reserved",
            "notification.sent",
            "order.completed",
            "order.created",
            "payment.processed",
            "payment.requested"
        ]
    );
    let requested = one(&flow, "payment.requested");
    assert_eq!(
        requested["data"]["amount"], 42.5,
        "the amount of order.created"
    );
    assert_eq!(requested["topic"], "payment-events");
    let completed = one(&flow, "order.completed");
    assert_eq!(completed["subject"], "o-1");
    assert_eq!(completed["data"]["paymentId"], "pay-o-1");
    assert!(caused_by(completed, one(&flow, "payment.processed")));
    let sent = one(&flow, "notification.sent");
    assert_eq!(sent["data"]["customerId"], "test-customer");
    assert_eq!(sent["data"]["kind"], "completed");
    assert!(caused_by(sent, completed));
    assert_causation_chain(&flow, &flow_id);

    let state = shop.stop();
    assert_eq!(
        state.stock("apple"),
        Some(99),
        "opening stock 100, one sold"
    );
    assert_eq!(state.count("stats/sent"), 1);
}

#[test]
fn a_declined_payment_releases_the_stock_and_cancels_with_an_unbroken_causation_chain() {
    let mut shop = Shop::standard();
    let flow_id = shop.order(
        "o-2",
        json!({"customerId": "c-2", "totalAmount": 30, "cardToken": "tok_declined",
               "items": [{"productId": "pear", "quantity": 5}, {"productId": "apple", "quantity": 2}]}),
    );
    shop.wait_flow(
        &flow_id,
        &["order.cancelled", "inventory.released", "notification.sent"],
    );
    shop.settle();
    let flow = shop.flow(&flow_id);

    let created = one(&flow, "order.created");
    let reserved = one(&flow, "inventory.reserved");
    let requested = one(&flow, "payment.requested");
    let failed = one(&flow, "payment.failed");
    let release = one(&flow, "inventory.release.requested");
    let released = one(&flow, "inventory.released");
    let cancelled = one(&flow, "order.cancelled");
    let sent = one(&flow, "notification.sent");
    assert_eq!(flow.len(), 8, "{:?}", type_list(&flow));

    assert_eq!(created["id"], flow_id.as_str());
    assert!(caused_by(reserved, created));
    // The saga asks for payment when the reservation is known — or, when the
    // reservation reached it first, when the order did.
    assert!(caused_by(requested, reserved) || caused_by(requested, created));
    assert!(caused_by(failed, requested));
    assert!(caused_by(release, failed));
    assert!(caused_by(cancelled, failed));
    assert!(caused_by(released, release));
    assert!(caused_by(sent, cancelled));
    assert_causation_chain(&flow, &flow_id);
    for e in &flow {
        assert_eq!(e["correlationid"], flow_id.as_str(), "{}", e["type"]);
        assert_eq!(e["subject"], "o-2", "{}", e["type"]);
    }
    assert_eq!(requested["data"]["amount"], 30);
    assert_eq!(failed["data"]["reason"], "card declined");
    assert_eq!(cancelled["data"]["reason"], "card declined");
    assert_eq!(cancelled["data"]["failedStep"], "payment.failed");
    assert_eq!(released["data"]["items"], created["data"]["items"]);
    assert_eq!(sent["data"]["kind"], "cancelled");

    let state = shop.stop();
    assert_eq!(state.stock("pear"), Some(20), "stock restored");
    assert_eq!(state.stock("apple"), Some(100), "stock restored");
    assert_eq!(
        state.get("inventory", "reservation/o-2").unwrap()["status"],
        "released"
    );
}

#[test]
fn out_of_stock_cancels_the_order_without_requesting_payment() {
    let mut shop = Shop::standard();
    let flow_id = shop.order(
        "o-3",
        json!({"customerId": "c-3", "totalAmount": 9.99,
               "items": [{"productId": "apple", "quantity": 1}, {"productId": "plum", "quantity": 4}]}),
    );
    shop.wait_flow(&flow_id, &["order.cancelled", "notification.sent"]);
    shop.settle();
    let flow = shop.flow(&flow_id);

    let mut types = type_list(&flow);
    types.sort();
    assert_eq!(
        types,
        [
            "inventory.reservation.failed",
            "notification.sent",
            "order.cancelled",
            "order.created"
        ]
    );
    let failed = one(&flow, "inventory.reservation.failed");
    assert_eq!(
        failed["data"]["shortages"],
        json!([{"productId": "plum", "requested": 4, "available": 3}])
    );
    let cancelled = one(&flow, "order.cancelled");
    // Caused by the failure — or by the order, when the failure reached the
    // saga first (the two come from different topics).
    assert!(caused_by(cancelled, failed) || caused_by(cancelled, one(&flow, "order.created")));
    assert_eq!(
        cancelled["data"]["failedStep"],
        "inventory.reservation.failed"
    );
    assert_causation_chain(&flow, &flow_id);
    assert!(
        shop.d().read_all("payment-events", 0).is_empty(),
        "no payment requested, none decided"
    );

    let state = shop.stop();
    assert_eq!(
        state.stock("apple"),
        None,
        "nothing taken: the opening stock stands"
    );
    assert_eq!(state.stock("plum"), None);
}

#[test]
fn a_schema_violation_is_422_naming_the_path_and_a_newer_version_is_accepted() {
    let mut shop = Shop::standard();
    let d = shop.d();
    let before = d.log_fingerprint();

    let bad = json!({"specversion": "1.0", "type": "order.created", "source": "shop",
        "subject": "o-4", "data": {"orderId": "o-4", "customerId": "c-4", "totalAmount": 5,
        "items": [{"productId": "apple", "quantity": 0}]}});
    let (status, body) = d.publish(&bad);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "schema_violation");
    assert_eq!(body["error"]["path"], "/items/0/quantity");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/items/0/quantity"),
        "{body}"
    );
    // A batch with one bad event is refused whole.
    let good = json!({"specversion": "1.0", "type": "order.created", "source": "shop",
        "subject": "o-5", "data": {"orderId": "o-5", "customerId": "c-5", "totalAmount": 5,
        "items": [{"productId": "apple", "quantity": 1}]}});
    let (status, body) = d.post(
        "/v1/events",
        "application/cloudevents-batch+json",
        &json!([good, bad]).to_string(),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(d.log_fingerprint(), before, "nothing appended");

    // Version 2 adds `currency`. Version 1 forbids unknown fields, so the same
    // data is refused when the event names version 1 ...
    let v2_data = json!({"orderId": "o-6", "customerId": "c-6", "totalAmount": 70,
        "currency": "SEK", "items": [{"productId": "apple", "quantity": 1}]});
    let with_schema = |version: &str| {
        json!({"specversion": "1.0", "type": "order.created", "source": "shop",
               "subject": "o-6", "data": v2_data,
               "dataschema": format!("{}/v1/schemas/order.created/{version}", d.url)})
    };
    let (status, body) = d.publish(&with_schema("1"));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["schema_version"], "1");
    assert_eq!(d.log_fingerprint(), before, "nothing appended");
    // ... and accepted under version 2.
    let (status, body) = d.publish(&with_schema("2"));
    assert_eq!(status, 201, "{body}");
    let flow_id = body["events"][0]["id"].as_str().unwrap().to_owned();
    // An event naming no version is checked against the latest (2): old v1
    // producers keep working because v2 only added an optional field.
    let id_v1 = shop.order(
        "o-7",
        json!({"customerId": "c-7", "totalAmount": 1, "items": [{"productId": "pear", "quantity": 1}]}),
    );

    // The newer event flows through; the saga carries its currency to the end.
    let flow = shop.wait_flow(&flow_id, &["order.completed", "notification.sent"]);
    assert_eq!(one(&flow, "payment.requested")["data"]["currency"], "SEK");
    assert_eq!(one(&flow, "order.completed")["data"]["currency"], "SEK");
    let v1_flow = shop.wait_flow(&id_v1, &["order.completed"]);
    assert_eq!(one(&v1_flow, "order.completed")["data"]["currency"], "EUR");
    shop.stop();
}

// ---------------------------------------------------------------------------
// 1,000 orders

const ORDERS: usize = 1000;
const PRODUCTS: usize = 8;
const OPENING: u64 = 300;
const RARE_OPENING: u64 = 10;
const LIMIT: f64 = 1000.0;

/// What the test decided for one order.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    customer: String,
    items: Vec<(String, u64)>,
    amount: u64,
    declined_card: bool,
    unstocked: bool,
}

impl Planned {
    fn payable(&self) -> bool {
        !self.declined_card && (self.amount as f64) <= LIMIT
    }

    fn data(&self) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|(p, q)| json!({"productId": p, "quantity": q}))
            .collect();
        let mut data = json!({"orderId": self.id, "customerId": self.customer,
                              "items": items, "totalAmount": self.amount});
        if self.declined_card {
            data["cardToken"] = "tok_declined".into();
        } else {
            data["cardToken"] = "tok_visa".into();
        }
        data
    }
}

fn plan(seed: u64, n: usize) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let mut items = Vec::new();
            for _ in 0..rng.usize(1..=3) {
                items.push((format!("sku-{}", rng.usize(0..PRODUCTS)), rng.u64(1..=2)));
            }
            if rng.f64() < 0.15 {
                items.push(("sku-rare".to_owned(), 1));
            }
            let unstocked = rng.f64() < 0.05;
            if unstocked {
                items.push(("sku-none".to_owned(), 1));
            }
            let amount = if rng.f64() < 0.1 {
                rng.u64(1001..5000)
            } else {
                rng.u64(1..=900)
            };
            Planned {
                id: format!("ord-{i:04}"),
                customer: format!("cust-{}", rng.usize(0..200)),
                items,
                amount,
                declined_card: rng.f64() < 0.15,
                unstocked,
            }
        })
        .collect()
}

fn opening_stock() -> String {
    let mut entries: Vec<String> = (0..PRODUCTS)
        .map(|i| format!("sku-{i}={OPENING}"))
        .collect();
    entries.push(format!("sku-rare={RARE_OPENING}"));
    entries.join(", ")
}

fn opening_of(product: &str) -> u64 {
    match product {
        "sku-rare" => RARE_OPENING,
        "sku-none" => 0,
        _ => OPENING,
    }
}

/// Compiled `demo/schemas`, the latest version of each type (what the daemon
/// checks an event without `dataschema` against).
fn latest_validators() -> HashMap<String, jsonschema::Validator> {
    let mut latest: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    for (ty, version, schema) in demo_schemas() {
        let v: u64 = version.parse().unwrap();
        if latest.get(&ty).is_none_or(|(have, _)| *have < v) {
            latest.insert(ty, (v, schema));
        }
    }
    latest
        .into_iter()
        .map(|(ty, (_, schema))| (ty, jsonschema::validator_for(&schema).unwrap()))
        .collect()
}

/// 1,000 orders published concurrently from 8 threads, with a seeded random
/// mix of declined cards, amounts over the limit, unstocked products and
/// contended stock. Checked afterwards, over the whole log and the plugins'
/// state:
/// - every order ended exactly once, completed or cancelled, and only payable,
///   stocked orders completed;
/// - final stock = opening stock - the items of completed orders (every
///   reservation of a cancelled order was released, exactly once);
/// - payment was requested once per reserved order and never otherwise;
/// - every event satisfies its registered schema and belongs to an unbroken
///   causation chain back to its order's `order.created`;
/// - each notification was sent once — also after a range of the log was
///   delivered a second time, in two ways:
///   - (a) the same events (same ids) published into `order-replay`, a second
///     topic the operator lets `notification` read: the plugin really receives
///     an id it already handled, and `stats/duplicate-deliveries` proves it
///     skipped each of them;
///   - (b) the same range republished to `order-events` under new ids, as a
///     producer re-sending would: every plugin receives the orders again, and
///     none takes stock, charges, completes, cancels or notifies twice
///     (`stats/duplicate-outcomes` counts the notifications it held back).
#[test]
fn a_thousand_concurrent_orders_end_exactly_once_with_consistent_stock_and_single_notifications() {
    let seed = std::env::var("SAGA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (SAGA_SEED overrides)");
    let orders = plan(seed, ORDERS);
    let stock = opening_stock();
    let notification_sidecar = sidecar(
        "notification",
        &[],
        "[[subscriptions]]\ntopic = \"order-{events,replay}\"\ntype = \"order.{completed,cancelled}\"\n",
    );
    let mut shop = Shop::start(
        &[
            (
                "inventory",
                sidecar("inventory", &[("opening-stock", &stock)], ""),
            ),
            ("notification", notification_sidecar),
        ],
        "[log]\ndefault-partitions = 4\n",
    );

    let started = Instant::now();
    shop.publish_concurrently(&orders);
    let published = started.elapsed();
    shop.wait_notified(ORDERS as u64);
    let processed = started.elapsed();
    shop.settle();
    eprintln!(
        "{ORDERS} orders: published in {published:?}, all notified after {processed:?}, settled after {:?}",
        started.elapsed()
    );

    let events = shop.all_events();
    eprintln!("{} events in the log", events.len());
    check_the_log(&orders, &events, 50);
    let (_, plugins) = shop.d().get("/v1/plugins");
    for p in plugins["plugins"].as_array().unwrap() {
        assert_eq!(p["dead_lettered"], 0, "{p}");
        assert_eq!(p["state"], "running", "{p}");
    }
    // The gateway charged each payable order exactly once, and no other.
    let charged = shop.gateway.stats()["orders"].clone();
    let paid: BTreeMap<String, Value> = events
        .iter()
        .filter(|e| e["type"] == "payment.processed")
        .map(|e| (e["subject"].as_str().unwrap().to_owned(), json!(1)))
        .collect();
    assert!(!paid.is_empty());
    assert_eq!(charged, json!(paid), "charges per order at the gateway");

    // Deliver a range of order-events a second time.
    let range: Vec<&Value> = events
        .iter()
        .filter(|e| e["topic"] == "order-events" && e["partition"] == 0)
        .filter(|e| (100..300).contains(&e["offset"].as_u64().unwrap()))
        .collect();
    let outcomes_in_range = range
        .iter()
        .filter(|e| e["type"] == "order.completed" || e["type"] == "order.cancelled")
        .count() as u64;
    let created_in_range = range
        .iter()
        .filter(|e| e["type"] == "order.created")
        .count();
    assert!(
        outcomes_in_range > 20 && created_in_range > 20,
        "the range mixes orders and outcomes"
    );
    let resend = |e: &Value, id: String| {
        json!({"specversion": "1.0", "id": id, "type": e["type"], "source": "replay",
               "subject": e["subject"], "correlationid": e["correlationid"], "data": e["data"]})
    };
    // (a) the same ids into a second topic.
    let same_ids: Vec<Value> = range
        .iter()
        .map(|e| resend(e, e["id"].as_str().unwrap().to_owned()))
        .collect();
    let (status, body) = shop.d().post(
        "/v1/topics/order-replay/events",
        "application/cloudevents-batch+json",
        &Value::Array(same_ids).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    // (b) new ids, the original topic.
    let new_ids: Vec<Value> = range
        .iter()
        .map(|e| resend(e, format!("{}-again", e["id"].as_str().unwrap())))
        .collect();
    let (status, body) = shop.d().post(
        "/v1/topics/order-events/events",
        "application/cloudevents-batch+json",
        &Value::Array(new_ids).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let fingerprint = |shop: &Shop, topic: &str| -> Vec<(String, u64, u64)> {
        shop.d()
            .log_fingerprint()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .collect()
    };
    let before: Vec<_> = ["inventory-events", "payment-events", "notification-events"]
        .iter()
        .map(|t| fingerprint(&shop, t))
        .collect();
    let consumed_replay = wait_for(Duration::from_secs(60), || {
        let (_, plugins) = shop.d().get("/v1/plugins");
        plugins["plugins"].as_array().unwrap().iter().any(|p| {
            p["name"] == "notification"
                && p["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|q| q["topic"] == "order-replay" && q["lag"] == 0 && q["end"] != 0)
        })
    });
    assert!(consumed_replay, "{}", shop.d().get("/v1/plugins").1);
    shop.settle();
    let after: Vec<_> = ["inventory-events", "payment-events", "notification-events"]
        .iter()
        .map(|t| fingerprint(&shop, t))
        .collect();
    assert_eq!(after, before, "the second delivery caused no new events");
    let events_after = shop.all_events();
    let from_saga = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["source"] == "evhost://plugin/order-saga")
            .count()
    };
    assert_eq!(
        from_saga(&events_after),
        from_saga(&events),
        "the saga emitted nothing new"
    );

    let state = shop.stop();
    check_final_stock(&orders, &events, &state);
    assert_eq!(
        state.count("stats/sent"),
        ORDERS as u64,
        "one notification per order"
    );
    assert_eq!(
        state.count("stats/duplicate-deliveries"),
        outcomes_in_range,
        "(a): every outcome of the range reached notification again under its id and was skipped"
    );
    assert_eq!(
        state.count("stats/duplicate-outcomes"),
        outcomes_in_range,
        "(b): every outcome of the range reached notification again under a new id and was held back"
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

/// The log-level checks of the 1,000-order test.
fn check_the_log(orders: &[Planned], events: &[Value], at_least_each: usize) {
    let validators = latest_validators();
    for e in events {
        let ty = e["type"].as_str().unwrap();
        let validator = validators
            .get(ty)
            .unwrap_or_else(|| panic!("no schema for {ty}"));
        let errors: Vec<String> = validator
            .iter_errors(&e["data"])
            .map(|err| format!("{} at {}", err, err.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{ty} {} violates its schema: {errors:?}",
            e["data"]
        );
    }

    let mut flows: HashMap<&str, Vec<Value>> = HashMap::new();
    for e in events {
        flows
            .entry(e["correlationid"].as_str().unwrap())
            .or_default()
            .push(e.clone());
    }
    assert_eq!(flows.len(), orders.len(), "one flow per order");

    let mut by_order: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in events {
        by_order
            .entry(e["subject"].as_str().unwrap())
            .or_default()
            .push(e);
    }
    let (mut completed, mut declined, mut out_of_stock) = (0, 0, 0);
    // Steps that became due when a late `order.created` reached the saga.
    let mut due_on_late_order = 0;
    for o in orders {
        let evs = &by_order[o.id.as_str()];
        let count = |ty: &str| evs.iter().filter(|e| e["type"] == ty).count();
        let created = evs.iter().find(|e| e["type"] == "order.created").unwrap();
        let flow = &flows[created["id"].as_str().unwrap()];
        assert_eq!(
            flow.len(),
            evs.len(),
            "{}: its events are exactly its flow",
            o.id
        );
        assert_causation_chain(flow, created["id"].as_str().unwrap());
        for e in evs {
            assert_eq!(e["data"]["orderId"], o.id.as_str());
            if e["source"] == "evhost://plugin/order-saga" && caused_by(e, created) {
                due_on_late_order += 1;
            }
        }

        let (done, cancelled) = (count("order.completed"), count("order.cancelled"));
        assert_eq!(
            done + cancelled,
            1,
            "{}: one outcome, got {:?}",
            o.id,
            type_list_refs(evs)
        );
        assert_eq!(count("notification.sent"), 1, "{}", o.id);
        let reserved = count("inventory.reserved");
        assert_eq!(
            reserved + count("inventory.reservation.failed"),
            1,
            "{}",
            o.id
        );
        assert_eq!(
            count("payment.requested"),
            reserved,
            "{}: payment only after reservation",
            o.id
        );
        if done == 1 {
            completed += 1;
            assert!(o.payable() && !o.unstocked, "{} completed: {o:?}", o.id);
            assert_eq!(count("inventory.release.requested"), 0);
            let requested = evs
                .iter()
                .find(|e| e["type"] == "payment.requested")
                .unwrap();
            assert_eq!(
                requested["data"]["amount"], o.amount,
                "{}: the order's amount",
                o.id
            );
        } else {
            let c = evs.iter().find(|e| e["type"] == "order.cancelled").unwrap();
            match c["data"]["failedStep"].as_str().unwrap() {
                "payment.failed" => {
                    declined += 1;
                    assert!(!o.payable(), "{} declined: {o:?}", o.id);
                    assert_eq!(reserved, 1);
                    assert_eq!(count("inventory.release.requested"), 1, "{}", o.id);
                    assert_eq!(count("inventory.released"), 1, "{}: released once", o.id);
                }
                "inventory.reservation.failed" => {
                    out_of_stock += 1;
                    assert_eq!(reserved, 0);
                    assert_eq!(count("inventory.release.requested"), 0, "{}", o.id);
                }
                other => panic!("{}: unexpected failure {other}", o.id),
            }
        }
        if o.unstocked {
            assert_eq!(count("inventory.reservation.failed"), 1, "{}", o.id);
        }
    }
    eprintln!(
        "outcomes: {completed} completed, {declined} payment failed, {out_of_stock} out of stock; \
         {due_on_late_order} saga steps emitted on an order.created that arrived after its successor"
    );
    assert!(
        completed.min(declined).min(out_of_stock) >= at_least_each,
        "a real mix of outcomes"
    );
}

fn type_list_refs(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Final stock = opening - the items of completed orders, for every product.
fn check_final_stock(orders: &[Planned], events: &[Value], state: &PluginState) {
    let completed: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "order.completed")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    let mut sold: BTreeMap<String, u64> = BTreeMap::new();
    let mut products: BTreeSet<String> = BTreeSet::new();
    for o in orders {
        for (p, q) in &o.items {
            products.insert(p.clone());
            if completed.contains(o.id.as_str()) {
                *sold.entry(p.clone()).or_default() += q;
            }
        }
    }
    for p in &products {
        let expected = opening_of(p) - sold.get(p).copied().unwrap_or(0);
        let actual = state.stock(p).unwrap_or(opening_of(p));
        assert_eq!(
            actual,
            expected,
            "{p}: opening {} sold {:?}",
            opening_of(p),
            sold.get(p)
        );
    }
    assert_eq!(
        state.stock("sku-none"),
        None,
        "never stocked, never touched"
    );
}

/// At-least-once delivery for real: the daemon is killed with `kill -9` while
/// orders are in flight and restarted on the same data. Batches whose commit
/// did not happen are delivered again from the committed offsets; since a
/// batch's emits, state writes and offset commit together, the redelivered
/// calls start from the state the first delivery never changed — the flow
/// ends exactly as if nothing had happened.
#[test]
fn orders_in_flight_when_the_daemon_is_killed_end_exactly_once_after_restart() {
    const N: usize = 300;
    let orders = plan(11, N);
    let stock = opening_stock();
    let mut shop = Shop::start(
        &[(
            "inventory",
            sidecar("inventory", &[("opening-stock", &stock)], ""),
        )],
        "[log]\ndefault-partitions = 4\n",
    );
    shop.publish_concurrently(&orders);
    assert!(wait_for(Duration::from_secs(60), || shop
        .end_of("notification-events")
        >= N as u64 / 5));
    let at_kill = shop.end_of("notification-events");
    shop.kill9_and_restart();
    assert!(
        at_kill < N as u64,
        "orders were still in flight at the kill"
    );
    shop.wait_notified(N as u64);
    shop.settle();

    let events = shop.all_events();
    check_the_log(&orders, &events, 1);
    let state = shop.stop();
    check_final_stock(&orders, &events, &state);
    assert_eq!(state.count("stats/sent"), N as u64);
    eprintln!("killed with {at_kill} of {N} orders notified");
}
