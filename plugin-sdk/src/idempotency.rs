//! Skipping events already handled, keyed by event id, kept in the plugin's state.
//!
//! The records are ordinary state writes, so they commit atomically with the
//! consumer offset and the handler's own effects: an event is marked handled if
//! and only if its effects were committed. A redelivery of an event whose call
//! failed or trapped is therefore *not* skipped (nothing was committed), while a
//! second copy of a committed event — the same id published twice, a replay, an
//! offset rewind — is.
//!
//! Growth is bounded by a window: ids are numbered as they are marked and the
//! id marked `window` marks earlier is forgotten (a ring of slots in state).
//! A copy arriving after more than `window` other events were marked is handled
//! again. Each mark costs two reads and three or four writes.

use crate::context::RESERVED_PREFIX;
use crate::{Context, Event, HandlerError, Level, SdkError};

/// How many handled ids [`Context::once`] remembers unless the handler calls
/// [`Context::set_dedupe_window`].
///
/// ```
/// assert_eq!(evhost_sdk::DEFAULT_DEDUPE_WINDOW, 10_000);
/// ```
pub const DEFAULT_DEDUPE_WINDOW: u64 = 10_000;

const SEQ_KEY: &str = "__evhost/handled/seq";

fn id_key(id: &str) -> String {
    format!("{RESERVED_PREFIX}handled/id/{id}")
}

fn slot_key(slot: u64) -> String {
    format!("{RESERVED_PREFIX}handled/slot/{slot}")
}

impl<'h> Context<'h> {
    /// Runs `f` unless `event` was already handled, then marks it handled.
    /// The mark is committed with `f`'s effects or not at all.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    ///     cx.once(event, |cx| {
    ///         let n: u64 = cx.state_get("n")?.unwrap_or(0);
    ///         cx.state_set("n", &(n + 1))?;
    ///         Ok(())
    ///     })
    /// }
    ///
    /// let mut host = TestHost::new();
    /// let event = TestEvent::new("user.created").build();
    /// host.deliver(handle, &event).unwrap();
    /// host.deliver(handle, &event).unwrap(); // a second copy: skipped
    /// assert_eq!(host.state_json::<u64>("n"), Some(1));
    /// ```
    pub fn once<F>(&mut self, event: &Event, f: F) -> Result<(), HandlerError>
    where
        F: FnOnce(&mut Context<'h>) -> Result<(), HandlerError>,
    {
        if self.already_handled(event)? {
            self.log(
                Level::Debug,
                "skipping an event already handled",
                &[("id", &event.id)],
            );
            return Ok(());
        }
        f(self)?;
        self.mark_handled(event)?;
        Ok(())
    }

    /// Whether `event`'s id was marked by [`mark_handled`](Self::mark_handled)
    /// in a committed call (or earlier in this call), within the window.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    ///     if cx.already_handled(event)? {
    ///         return Ok(());
    ///     }
    ///     cx.emit(OutgoingEvent::new("mail.sent"))?;
    ///     cx.mark_handled(event)?;
    ///     Ok(())
    /// }
    ///
    /// let mut host = TestHost::new();
    /// let event = TestEvent::new("user.created").build();
    /// host.deliver(handle, &event).unwrap();
    /// host.deliver(handle, &event).unwrap();
    /// assert_eq!(host.emitted().len(), 1);
    /// ```
    pub fn already_handled(&mut self, event: &Event) -> Result<bool, SdkError> {
        Ok(self.state_get_bytes(&id_key(&event.id))?.is_some())
    }

    /// Records `event`'s id as handled (a no-op if it already is), forgetting
    /// the oldest id when the window is full.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// let event = TestEvent::new("user.created").build();
    /// host.deliver(|event, cx| Ok(cx.mark_handled(event)?), &event).unwrap();
    /// host.deliver(|event, cx| {
    ///     assert!(cx.already_handled(event)?);
    ///     Ok(())
    /// }, &event).unwrap();
    /// ```
    pub fn mark_handled(&mut self, event: &Event) -> Result<(), SdkError> {
        let key = id_key(&event.id);
        if self.state_get_bytes(&key)?.is_some() {
            return Ok(());
        }
        let seq = self.state_get::<u64>(SEQ_KEY)?.unwrap_or(0) + 1;
        if self.dedupe_window > 0 {
            let slot = slot_key(seq % self.dedupe_window);
            if let Some(old) = self.state_get_bytes(&slot)? {
                self.state_delete(&id_key(&String::from_utf8_lossy(&old)))?;
            }
            self.state_set_bytes(&slot, event.id.as_bytes())?;
        }
        self.state_set(&key, &seq)?;
        self.state_set(SEQ_KEY, &seq)
    }

    /// How many handled ids are remembered; `0` means without bound.
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.dedupe_window(), evhost_sdk::DEFAULT_DEDUPE_WINDOW);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn dedupe_window(&self) -> u64 {
        self.dedupe_window
    }

    /// Changes the window for the rest of this call. Call it at the top of
    /// the handler, with the same value on every call: the window is a
    /// property of the records in state. If it ever shrinks, ids in slots
    /// beyond the new window are never forgotten (a bounded leak).
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| {
    ///     cx.set_dedupe_window(100);
    ///     assert_eq!(cx.dedupe_window(), 100);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn set_dedupe_window(&mut self, window: u64) {
        self.dedupe_window = window;
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{TestEvent, TestHost};
    use crate::{Context, Event, HandlerError};

    fn count(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
        cx.set_dedupe_window(3);
        cx.once(event, |cx| {
            let n: u64 = cx.state_get("n")?.unwrap_or(0);
            cx.state_set("n", &(n + 1))?;
            Ok(())
        })
    }

    #[test]
    fn a_window_forgets_the_oldest_id_and_keeps_state_bounded() {
        let mut host = TestHost::new();
        let events: Vec<Event> = (0..5)
            .map(|i| TestEvent::new("x.y").id(format!("e{i}")).build())
            .collect();
        for event in &events {
            host.deliver(count, event).unwrap();
        }
        assert_eq!(host.state_json::<u64>("n"), Some(5));
        let remembered = host
            .state_keys()
            .into_iter()
            .filter(|k| k.starts_with("__evhost/handled/id/"))
            .count();
        assert_eq!(remembered, 3);
        // e4 is remembered, e0 was forgotten.
        host.deliver(count, &events[4]).unwrap();
        assert_eq!(host.state_json::<u64>("n"), Some(5));
        host.deliver(count, &events[0]).unwrap();
        assert_eq!(host.state_json::<u64>("n"), Some(6));
    }

    /// The Python and JavaScript SDKs (plugin-sdk/python, plugin-sdk/js) run
    /// the same scenario against the same bytes: a plugin ported between
    /// languages keeps its records.
    #[test]
    fn the_state_key_layout_is_fixed() {
        let mut host = TestHost::new();
        for i in 0..5 {
            host.deliver(count, TestEvent::new("x.y").id(format!("e{i}")))
                .unwrap();
        }
        let layout: Vec<(&str, &[u8])> = host
            .state_keys()
            .into_iter()
            .map(|k| (k, host.state_bytes(k).unwrap()))
            .collect();
        let expected: Vec<(&str, &[u8])> = vec![
            ("__evhost/handled/id/e2", b"3"),
            ("__evhost/handled/id/e3", b"4"),
            ("__evhost/handled/id/e4", b"5"),
            ("__evhost/handled/seq", b"5"),
            ("__evhost/handled/slot/0", b"e2"),
            ("__evhost/handled/slot/1", b"e3"),
            ("__evhost/handled/slot/2", b"e4"),
            ("n", b"5"),
        ];
        assert_eq!(layout, expected);
    }

    #[test]
    fn a_failed_call_does_not_mark_the_event() {
        let mut host = TestHost::new();
        let event = TestEvent::new("x.y").build();
        let failed = host.deliver(
            |event, cx| cx.once(event, |_| Err(HandlerError::retry("later"))),
            &event,
        );
        assert!(failed.unwrap_err().is_retry());
        host.deliver(count, &event).unwrap();
        assert_eq!(host.state_json::<u64>("n"), Some(1));
    }

    #[test]
    fn reserved_keys_are_hidden_from_listing() {
        let mut host = TestHost::new();
        host.deliver(count, TestEvent::new("x.y")).unwrap();
        host.deliver(
            |_, cx| {
                assert_eq!(cx.state_keys("")?, vec!["n"]);
                assert!(!cx.state_keys(super::RESERVED_PREFIX)?.is_empty());
                Ok(())
            },
            TestEvent::new("x.y"),
        )
        .unwrap();
    }
}
