//! `welcome`: greets every new user.
//!
//! On `user.created` (data `{"email": ..., "name": ...}`) it emits
//! `notification.requested` to the user's email, with a greeting built from the
//! operator's `greeting` setting (default "Welcome"). The host sets the new
//! event's `causationid` and carries the `correlationid` over, so the
//! notification stays in the user's flow. An event without an email is
//! rejected: retrying cannot add one.

use evhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};

evhost_sdk::plugin!(
    name = "welcome",
    subscribe = [("user-events", "user.created")],
    handler = handle,
);

/// The part of `user.created` this plugin reads.
#[derive(Debug, Deserialize)]
struct UserCreated {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// The data of the emitted `notification.requested`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct NotificationRequested {
    channel: String,
    to: String,
    message: String,
}

fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    let user: UserCreated = event.data_json()?;
    let email = match user.email.as_deref().map(str::trim) {
        Some(email) if !email.is_empty() => email.to_owned(),
        _ => return Err(HandlerError::reject("user.created without an email")),
    };
    let greeting = cx.config_or("greeting", "Welcome");
    let message = match user.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{greeting}, {name}!"),
        _ => format!("{greeting}!"),
    };
    let notification = NotificationRequested {
        channel: "email".to_owned(),
        to: email,
        message,
    };
    let mut out = OutgoingEvent::new("notification.requested")
        // Same id for every redelivery of this event: the host dedupes it.
        .id(format!("{}-welcome", event.id))
        .json(&notification)?;
    if let Some(subject) = &event.subject {
        out = out.subject(subject.as_str());
    }
    let id = cx.emit(out)?;
    cx.log(
        Level::Info,
        "welcome requested",
        &[
            ("user", event.subject.as_deref().unwrap_or("")),
            ("notification", &id),
        ],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_sdk::testing::{TestEvent, TestHost};
    use serde_json::json;

    fn user_created(data: serde_json::Value) -> Event {
        TestEvent::new("user.created")
            .subject("u-1")
            .correlationid("signup-flow-7")
            .json(&data)
            .build()
    }

    #[test]
    fn describes_itself_as_welcome_on_user_created() {
        let info = describe();
        assert_eq!(info.name, "welcome");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            info.subscriptions,
            vec![Subscription::new("user-events", "user.created")]
        );
    }

    #[test]
    fn emits_a_notification_caused_by_the_user_event_in_the_same_flow() {
        let mut host = TestHost::new().with_plugin_name("welcome");
        let event = user_created(json!({"email": "ada@example.com", "name": "Ada"}));
        host.deliver(handle, &event).unwrap();

        let [sent] = host.emitted() else {
            panic!("exactly one event expected, got {:?}", host.emitted())
        };
        assert_eq!(sent.ty, "notification.requested");
        assert_eq!(sent.topic, "notification-events");
        assert_eq!(sent.subject.as_deref(), Some("u-1"));
        assert_eq!(sent.causationid.as_deref(), Some(event.id.as_str()));
        assert_eq!(sent.correlationid, "signup-flow-7");
        assert_eq!(sent.source, "evhost://plugin/welcome");
        assert_eq!(
            sent.data_json::<NotificationRequested>().unwrap(),
            NotificationRequested {
                channel: "email".into(),
                to: "ada@example.com".into(),
                message: "Welcome, Ada!".into(),
            }
        );
    }

    #[test]
    fn the_greeting_comes_from_config() {
        let mut host = TestHost::new().with_config("greeting", "Hej");
        host.deliver(handle, user_created(json!({"email": "bo@example.com"})))
            .unwrap();
        let sent: NotificationRequested = host.emitted()[0].data_json().unwrap();
        assert_eq!(sent.message, "Hej!");
    }

    #[test]
    fn a_user_without_an_email_is_rejected_and_nothing_is_emitted() {
        let mut host = TestHost::new();
        for data in [json!({"name": "Ada"}), json!({"email": "  "})] {
            let err = host.deliver(handle, user_created(data)).unwrap_err();
            assert!(err.is_reject(), "{err}");
            assert!(err.message().contains("email"), "{err}");
        }
        assert!(host.emitted().is_empty());
    }

    #[test]
    fn malformed_data_is_rejected() {
        let mut host = TestHost::new();
        let event = TestEvent::new("user.created").text("not json");
        assert!(host.deliver(handle, event).unwrap_err().is_reject());
        let no_data = TestEvent::new("user.created");
        assert!(host.deliver(handle, no_data).unwrap_err().is_reject());
    }
}
