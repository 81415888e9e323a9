//! `inventory`: reserves stock for orders and gives it back when asked.
//!
//! - `order.created` `{orderId, items: [{productId, quantity}]}`: when every item
//!   is available, the stock is taken and `inventory.reserved` `{orderId, items}`
//!   is emitted; otherwise nothing is taken and `inventory.reservation.failed`
//!   `{orderId, reason, shortages}` is emitted. All or nothing.
//! - `inventory.release.requested` `{orderId}`: a held reservation goes back to
//!   stock and `inventory.released` `{orderId, items}` is emitted.
//! - `inventory.restocked` `{productId, quantity}`: stock grows, once per event id.
//!
//! State: `stock/<productId>` (units available) and `reservation/<orderId>`
//! (reserved, released or failed, with the items). A product without a
//! `stock/` key starts at its opening balance from the operator's config,
//! `opening-stock = "apple=100, pear=20"` (0 when not listed); from its first
//! reservation on, state is the truth.
//!
//! Idempotent by *order id*, not event id: an `order.created` for an order that
//! already has a reservation record, or a release of a reservation that is not
//! held, changes nothing and emits nothing, whatever id the event carries. So a
//! republished order never takes stock twice and a repeated compensation never
//! returns it twice.

use std::collections::BTreeMap;

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};

evhost_sdk::plugin!(
    name = "inventory",
    subscribe = [
        ("order-events", "order.created"),
        ("inventory-events", "inventory.release.requested"),
        ("inventory-events", "inventory.restocked"),
    ],
    handler = handle,
);

/// The config key of the opening balances.
pub const OPENING_STOCK: &str = "opening-stock";

/// The state key of `product`'s available units.
pub fn stock_key(product: &str) -> String {
    format!("stock/{product}")
}

/// The state key of `order`'s reservation record.
pub fn reservation_key(order: &str) -> String {
    format!("reservation/{order}")
}

/// One order line, as in `order.created`, `inventory.reserved` and `inventory.released`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: String,
    pub quantity: u64,
}

/// What happened to an order's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The items are taken from stock and held for the order.
    Reserved,
    /// The items went back to stock (compensation).
    Released,
    /// Not enough stock; nothing was taken.
    Failed,
}

/// The state record `reservation/<orderId>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub status: Status,
    pub items: Vec<Item>,
}

/// A product that did not have enough units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shortage {
    pub product_id: String,
    pub requested: u64,
    pub available: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: String,
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseRequested {
    order_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Restocked {
    product_id: String,
    quantity: u64,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    match event.ty.as_str() {
        "order.created" => reserve(event, cx),
        "inventory.release.requested" => release(event, cx),
        "inventory.restocked" => cx.once(event, |cx| restock(event, cx)),
        other => {
            // Only reachable through an operator's subscription override.
            cx.log(Level::Warn, "ignoring an event type", &[("type", other)]);
            Ok(())
        }
    }
}

fn reserve(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let order: OrderCreated = event.data_json()?;
    check_order(&order)?;
    let key = reservation_key(&order.order_id);
    if let Some(existing) = cx.state_get::<Reservation>(&key)? {
        cx.log(
            Level::Info,
            "order already seen; nothing to do",
            &[
                ("order", &order.order_id),
                ("status", status_name(existing.status)),
            ],
        );
        return Ok(());
    }

    let opening = opening_stock(cx)?;
    let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
    for item in &order.items {
        let sum = wanted.entry(item.product_id.as_str()).or_insert(0);
        *sum = sum
            .checked_add(item.quantity)
            .ok_or_else(|| HandlerError::reject("item quantities overflow"))?;
    }
    let mut levels = Vec::with_capacity(wanted.len());
    let mut shortages = Vec::new();
    for (&product, &requested) in &wanted {
        let available = available(cx, &opening, product)?;
        if available < requested {
            shortages.push(Shortage {
                product_id: product.to_owned(),
                requested,
                available,
            });
        }
        levels.push((product, available.saturating_sub(requested)));
    }

    let subject = order.order_id.as_str();
    if shortages.is_empty() {
        for (product, left) in &levels {
            cx.state_set(&stock_key(product), left)?;
        }
        let record = Reservation {
            status: Status::Reserved,
            items: order.items.clone(),
        };
        cx.state_set(&key, &record)?;
        cx.emit(
            OutgoingEvent::new("inventory.reserved")
                .id(format!("{subject}:inventory.reserved"))
                .subject(subject)
                .json(&serde_json::json!({"orderId": subject, "items": order.items}))?,
        )?;
        cx.log(Level::Info, "stock reserved", &[("order", subject)]);
    } else {
        let reason = shortages
            .iter()
            .map(|s| {
                format!(
                    "{} out of stock (requested {}, available {})",
                    s.product_id, s.requested, s.available
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let record = Reservation {
            status: Status::Failed,
            items: order.items.clone(),
        };
        cx.state_set(&key, &record)?;
        cx.emit(
            OutgoingEvent::new("inventory.reservation.failed")
                .id(format!("{subject}:inventory.reservation.failed"))
                .subject(subject)
                .json(&serde_json::json!({
                    "orderId": subject,
                    "reason": reason,
                    "shortages": shortages,
                }))?,
        )?;
        cx.log(
            Level::Info,
            "reservation failed",
            &[("order", subject), ("reason", &reason)],
        );
    }
    Ok(())
}

fn release(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let request: ReleaseRequested = event.data_json()?;
    let order = request.order_id.as_str();
    let key = reservation_key(order);
    let mut record = match cx.state_get::<Reservation>(&key)? {
        Some(record) if record.status == Status::Reserved => record,
        other => {
            let status = other.map_or("unknown", |r| status_name(r.status));
            cx.log(
                Level::Info,
                "nothing held to release",
                &[("order", order), ("status", status)],
            );
            return Ok(());
        }
    };
    let opening = opening_stock(cx)?;
    for item in &record.items {
        let now = available(cx, &opening, &item.product_id)?;
        let back = now
            .checked_add(item.quantity)
            .ok_or_else(|| HandlerError::reject("stock overflow"))?;
        cx.state_set(&stock_key(&item.product_id), &back)?;
    }
    record.status = Status::Released;
    cx.state_set(&key, &record)?;
    cx.emit(
        OutgoingEvent::new("inventory.released")
            .id(format!("{order}:inventory.released"))
            .subject(order)
            .json(&serde_json::json!({"orderId": order, "items": record.items}))?,
    )?;
    cx.log(Level::Info, "stock released", &[("order", order)]);
    Ok(())
}

fn restock(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let restocked: Restocked = event.data_json()?;
    if restocked.product_id.is_empty() {
        return Err(HandlerError::reject(
            "inventory.restocked without a productId",
        ));
    }
    let opening = opening_stock(cx)?;
    let now = available(cx, &opening, &restocked.product_id)?;
    let next = now
        .checked_add(restocked.quantity)
        .ok_or_else(|| HandlerError::reject("stock overflow"))?;
    cx.state_set(&stock_key(&restocked.product_id), &next)?;
    cx.log(
        Level::Info,
        "restocked",
        &[
            ("product", &restocked.product_id),
            ("available", &next.to_string()),
        ],
    );
    Ok(())
}

/// Permanent problems of an order: no retry can fix them.
fn check_order(order: &OrderCreated) -> Result<(), HandlerError> {
    if order.order_id.is_empty() {
        return Err(HandlerError::reject("order.created without an orderId"));
    }
    if order.items.is_empty() {
        return Err(HandlerError::reject(format!(
            "order {} has no items",
            order.order_id
        )));
    }
    if let Some(item) = order
        .items
        .iter()
        .find(|i| i.quantity == 0 || i.product_id.is_empty())
    {
        return Err(HandlerError::reject(format!(
            "order {} has an invalid item {:?} (needs a productId and a quantity of at least 1)",
            order.order_id, item
        )));
    }
    Ok(())
}

fn available(
    cx: &mut Context,
    opening: &BTreeMap<String, u64>,
    product: &str,
) -> Result<u64, HandlerError> {
    Ok(match cx.state_get::<u64>(&stock_key(product))? {
        Some(units) => units,
        None => opening.get(product).copied().unwrap_or(0),
    })
}

fn opening_stock(cx: &mut Context) -> Result<BTreeMap<String, u64>, HandlerError> {
    match cx.config(OPENING_STOCK) {
        None => Ok(BTreeMap::new()),
        // A typo here must not silently mean "out of stock": reject, fix, replay.
        Some(text) => parse_opening_stock(&text)
            .map_err(|e| HandlerError::reject(format!("config {OPENING_STOCK}: {e}"))),
    }
}

/// Parses `"apple=100, pear=20"` (commas and/or whitespace between entries).
pub fn parse_opening_stock(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for entry in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        let (product, units) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {entry:?} is not PRODUCT=UNITS"))?;
        let units: u64 = units
            .parse()
            .map_err(|_| format!("entry {entry:?}: {units:?} is not a whole number"))?;
        if product.is_empty() || out.insert(product.to_owned(), units).is_some() {
            return Err(format!("entry {entry:?}: empty or repeated product"));
        }
    }
    Ok(out)
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Reserved => "reserved",
        Status::Released => "released",
        Status::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};
    use serde_json::{Value, json};

    fn host() -> TestHost {
        TestHost::new()
            .with_plugin_name("inventory")
            .with_config(OPENING_STOCK, "apple=10, pear=2")
    }

    fn order(id: &str, items: Value) -> Event {
        TestEvent::new("order.created")
            .subject(id)
            .json(&json!({"orderId": id, "customerId": "c-1", "items": items, "totalAmount": 5}))
            .build()
    }

    fn release_of(id: &str) -> Event {
        TestEvent::new("inventory.release.requested")
            .subject(id)
            .json(&json!({"orderId": id, "reason": "payment declined"}))
            .build()
    }

    fn stock(host: &TestHost, product: &str) -> Option<u64> {
        host.state_json(&stock_key(product))
    }

    #[test]
    fn describes_its_subscriptions() {
        let info = describe();
        assert_eq!(info.name, "inventory");
        assert_eq!(
            info.subscriptions[0],
            Subscription::new("order-events", "order.created")
        );
        assert_eq!(info.subscriptions.len(), 3);
    }

    #[test]
    fn an_available_order_takes_its_stock_and_is_reserved() {
        let mut host = host();
        let created = order(
            "o-1",
            json!([{"productId": "apple", "quantity": 3}, {"productId": "pear", "quantity": 2}]),
        );
        host.deliver(handle, &created).unwrap();

        assert_eq!(stock(&host, "apple"), Some(7));
        assert_eq!(stock(&host, "pear"), Some(0));
        let [reserved] = host.emitted() else {
            panic!("one event expected: {:?}", host.emitted())
        };
        assert_eq!(reserved.ty, "inventory.reserved");
        assert_eq!(reserved.topic, "inventory-events");
        assert_eq!(reserved.subject.as_deref(), Some("o-1"));
        assert_eq!(reserved.causationid.as_deref(), Some(created.id.as_str()));
        assert_eq!(reserved.correlationid, created.correlationid);
        let data: Value = reserved.data_json().unwrap();
        assert_eq!(data["orderId"], "o-1");
        assert_eq!(
            data["items"][1],
            json!({"productId": "pear", "quantity": 2})
        );
        let record: Reservation = host.state_json(&reservation_key("o-1")).unwrap();
        assert_eq!(record.status, Status::Reserved);
    }

    #[test]
    fn a_short_order_takes_nothing_and_names_the_shortage() {
        let mut host = host();
        host.deliver(
            handle,
            order(
                "o-2",
                json!([{"productId": "apple", "quantity": 1}, {"productId": "pear", "quantity": 3},
                       {"productId": "plum", "quantity": 1}]),
            ),
        )
        .unwrap();
        assert_eq!(
            stock(&host, "apple"),
            None,
            "nothing taken, not even apples"
        );
        let failed = &host.emitted()[0];
        assert_eq!(failed.ty, "inventory.reservation.failed");
        let data: Value = failed.data_json().unwrap();
        assert_eq!(
            data["shortages"],
            json!([{"productId": "pear", "requested": 3, "available": 2},
                   {"productId": "plum", "requested": 1, "available": 0}])
        );
        assert!(
            data["reason"]
                .as_str()
                .unwrap()
                .contains("pear out of stock (requested 3, available 2)")
        );
        let record: Reservation = host.state_json(&reservation_key("o-2")).unwrap();
        assert_eq!(record.status, Status::Failed);
    }

    #[test]
    fn repeated_lines_of_one_product_are_summed() {
        let mut host = host();
        host.deliver(
            handle,
            order(
                "o-3",
                json!([{"productId": "pear", "quantity": 2}, {"productId": "pear", "quantity": 1}]),
            ),
        )
        .unwrap();
        assert_eq!(host.emitted()[0].ty, "inventory.reservation.failed");
        assert_eq!(stock(&host, "pear"), None);
    }

    #[test]
    fn the_same_order_under_a_new_event_id_takes_stock_once() {
        let mut host = host();
        let items = json!([{"productId": "apple", "quantity": 4}]);
        host.deliver(handle, order("o-4", items.clone())).unwrap();
        host.deliver(handle, order("o-4", items)).unwrap(); // republished: a new id
        assert_eq!(stock(&host, "apple"), Some(6));
        assert_eq!(host.emitted().len(), 1);
    }

    #[test]
    fn a_release_returns_the_stock_once() {
        let mut host = host();
        host.deliver(
            handle,
            order("o-5", json!([{"productId": "apple", "quantity": 4}])),
        )
        .unwrap();
        let release = release_of("o-5");
        host.deliver(handle, &release).unwrap();
        host.deliver(handle, &release).unwrap();
        host.deliver(handle, release_of("o-5")).unwrap();
        assert_eq!(stock(&host, "apple"), Some(10));
        let types: Vec<&str> = host.emitted().iter().map(|e| e.ty.as_str()).collect();
        assert_eq!(types, ["inventory.reserved", "inventory.released"]);
        let released = &host.emitted()[1];
        assert_eq!(released.causationid.as_deref(), Some(release.id.as_str()));
        let record: Reservation = host.state_json(&reservation_key("o-5")).unwrap();
        assert_eq!(record.status, Status::Released);
    }

    #[test]
    fn releasing_a_failed_or_unknown_reservation_does_nothing() {
        let mut host = host();
        host.deliver(
            handle,
            order("o-6", json!([{"productId": "plum", "quantity": 1}])),
        )
        .unwrap();
        host.deliver(handle, release_of("o-6")).unwrap();
        host.deliver(handle, release_of("o-unknown")).unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(stock(&host, "plum"), None);
    }

    #[test]
    fn a_restock_adds_units_once_per_event() {
        let mut host = host();
        let restock = TestEvent::new("inventory.restocked")
            .json(&json!({"productId": "pear", "quantity": 5}))
            .build();
        host.deliver(handle, &restock).unwrap();
        host.deliver(handle, &restock).unwrap();
        assert_eq!(stock(&host, "pear"), Some(7));
        host.deliver(
            handle,
            order("o-7", json!([{"productId": "pear", "quantity": 7}])),
        )
        .unwrap();
        assert_eq!(host.emitted()[0].ty, "inventory.reserved");
        assert_eq!(stock(&host, "pear"), Some(0));
    }

    #[test]
    fn invalid_orders_and_config_are_rejected_without_effects() {
        let mut host = host();
        for items in [
            json!([]),
            json!([{"productId": "apple", "quantity": 0}]),
            json!([{"productId": "", "quantity": 1}]),
        ] {
            let err = host.deliver(handle, order("o-8", items)).unwrap_err();
            assert!(err.is_reject(), "{err}");
        }
        let not_json = TestEvent::new("order.created").text("nope");
        assert!(host.deliver(handle, not_json).unwrap_err().is_reject());

        let mut typo = TestHost::new().with_config(OPENING_STOCK, "apple:10");
        let err = typo
            .deliver(
                handle,
                order("o-9", json!([{"productId": "apple", "quantity": 1}])),
            )
            .unwrap_err();
        assert!(err.is_reject());
        assert!(err.message().contains("opening-stock"), "{err}");
        assert!(host.emitted().is_empty() && typo.emitted().is_empty());
        assert!(host.state_keys().is_empty());
    }

    #[test]
    fn opening_stock_parses_commas_and_spaces() {
        let parsed = parse_opening_stock("a=1, b=2 c=3,,").unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["c"], 3);
        assert!(parse_opening_stock("a=1 a=2").is_err());
        assert!(parse_opening_stock("a=-1").is_err());
        assert!(parse_opening_stock("").unwrap().is_empty());
    }
}
