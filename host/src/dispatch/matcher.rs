//! Subscription matching: topic globs choose the topics a plugin consumes,
//! event-type globs (of the subscriptions whose topic glob matched) choose the
//! events it is called with; other events advance the offset without a call.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::runtime::Subscription;

/// A plugin's compiled subscriptions.
#[derive(Debug, Clone)]
pub struct Matcher {
    subs: Vec<(globset::GlobMatcher, Glob)>,
}

/// The event types one topic's consumer passes to the plugin.
#[derive(Debug, Clone)]
pub struct TypeFilter(GlobSet);

impl TypeFilter {
    pub fn matches(&self, event_type: &str) -> bool {
        self.0.is_match(event_type)
    }
}

impl Matcher {
    pub fn new(subscriptions: &[Subscription]) -> Result<Self, globset::Error> {
        let subs = subscriptions
            .iter()
            .map(|s| {
                Ok((
                    Glob::new(&s.topic)?.compile_matcher(),
                    Glob::new(&s.event_type)?,
                ))
            })
            .collect::<Result<_, globset::Error>>()?;
        Ok(Matcher { subs })
    }

    /// Matches nothing.
    pub fn none() -> Self {
        Matcher { subs: Vec::new() }
    }

    pub fn topic_matches(&self, topic: &str) -> bool {
        self.subs.iter().any(|(t, _)| t.is_match(topic))
    }

    /// The union of the type globs of the subscriptions matching `topic`.
    pub fn type_filter(&self, topic: &str) -> TypeFilter {
        let mut set = GlobSetBuilder::new();
        for (t, ty) in &self.subs {
            if t.is_match(topic) {
                set.add(ty.clone());
            }
        }
        // Globs were validated in `new`, so building cannot fail; an empty set matches nothing.
        TypeFilter(set.build().unwrap_or_else(|_| GlobSet::empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(topic: &str, ty: &str) -> Subscription {
        Subscription {
            topic: topic.into(),
            event_type: ty.into(),
        }
    }

    #[test]
    fn type_globs_apply_per_matching_topic() {
        let m = Matcher::new(&[sub("order-events", "order.*"), sub("*", "*.failed")]).unwrap();
        assert!(m.topic_matches("order-events") && m.topic_matches("payment-events"));
        let orders = m.type_filter("order-events");
        assert!(orders.matches("order.created") && orders.matches("payment.failed"));
        assert!(!orders.matches("user.created"));
        let payments = m.type_filter("payment-events");
        assert!(payments.matches("payment.failed") && !payments.matches("payment.processed"));
    }

    #[test]
    fn no_subscriptions_match_nothing() {
        let m = Matcher::new(&[]).unwrap();
        assert!(!m.topic_matches("x"));
        assert!(!m.type_filter("x").matches("a.b"));
    }
}
