//! Dead-letter replay: the parked event is called on the *current* version of
//! its plugin. Success commits the call's effects and removes the dead letter
//! in one transaction; failure replaces the record with an updated one.
//!
//! A letter resolves at most once: only one replay of an id runs at a time
//! in this daemon (a second one is refused as in progress), and the commit
//! that resolves it is fenced by the letter itself — if another replay, a
//! discard or another daemon resolved it first, the commit is refused whole
//! and this replay's effects are dropped.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::consumer::kind_of;
use super::overlay::Overlay;
use super::{DispatchError, Dispatcher, ReplayOutcome};
use crate::log::{
    ConsumerCommit, DeadLetter, DeadLetterId, DeadLetterRecord, ErrorClass, FailureKind, LogError,
    NewEvent, StateChange,
};
use crate::runtime::InstanceSettings;

/// Dead letters listed per page by `replay_all`.
const PAGE: usize = 256;

/// The ids being replayed right now.
#[derive(Default)]
pub(super) struct InFlight(Mutex<HashSet<DeadLetterId>>);

/// Holds an id in [`InFlight`] until dropped.
struct Claim<'a> {
    set: &'a InFlight,
    id: DeadLetterId,
}

impl InFlight {
    fn claim(&self, id: DeadLetterId) -> Result<Claim<'_>, DispatchError> {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !ids.insert(id) {
            return Err(DispatchError::ReplayInProgress(id));
        }
        Ok(Claim { set: self, id })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A letter another replay or a discard resolved first is gone for this one.
fn gone(id: DeadLetterId) -> impl FnOnce(LogError) -> DispatchError {
    move |e| match e {
        LogError::DeadLetterGone(_) => DispatchError::UnknownDeadLetter(id),
        other => DispatchError::Log(other),
    }
}

pub(super) async fn replay(
    d: &Dispatcher,
    id: DeadLetterId,
) -> Result<ReplayOutcome, DispatchError> {
    let _claim = d.replaying.claim(id)?;
    let dl = d
        .log
        .dead_letter(id)
        .await?
        .ok_or(DispatchError::UnknownDeadLetter(id))?;
    let plugin = dl.record.plugin.clone();
    let (deployment, shared) = d
        .plugin_parts(&plugin)
        .ok_or_else(|| DispatchError::PluginNotLoaded(plugin.clone()))?;
    let overlay = Arc::new(Overlay::new(d.log.clone(), d.coordinator.is_some()));
    let settings = InstanceSettings {
        limits: deployment.settings.limits.clone(),
        grants: deployment.settings.grants.clone(),
        config: deployment.settings.config.clone(),
        state: overlay.clone(),
    };
    let mut instance = d.runtime.instance(deployment.plugin.clone(), settings);
    // Same rule as consumers: no other batch of this plugin may be between
    // reading and committing state meanwhile.
    let _guard = if deployment.settings.grants.state {
        Some(shared.state_lock.lock().await)
    } else {
        None
    };
    let event = Arc::new(dl.record.event.clone());
    let attempt = dl.record.attempts + 1;
    let call_event = event.clone();
    let result = tokio::task::spawn_blocking(move || instance.call(&call_event, attempt))
        .await
        .map_err(|e| {
            DispatchError::PluginNotLoaded(format!("{plugin} (the call thread failed: {e})"))
        })?;
    // Emits face the same check as in normal dispatch.
    let result = match (result, &shared.emit_check) {
        (Ok(effects), Some(check)) => check.apply(&deployment.plugin, &effects).map(|()| effects),
        (result, _) => result,
    };
    let failure = match result {
        Ok(effects) => {
            let state = effects
                .state
                .into_iter()
                .map(|(key, value)| StateChange {
                    namespace: plugin.clone(),
                    key,
                    value,
                })
                .collect();
            let committed = d
                .log
                .commit(ConsumerCommit {
                    group: dl.group.clone(),
                    emits: effects
                        .emits
                        .into_iter()
                        .map(|e| NewEvent::to_topic(e.topic, e.event))
                        .collect(),
                    state,
                    state_read: overlay.take_reads(&plugin),
                    resolve_dead_letter: Some(id),
                    ..Default::default()
                })
                .await;
            match committed {
                Ok(_) => {
                    shared.processed.fetch_add(1, Ordering::Relaxed);
                    return Ok(ReplayOutcome::Succeeded);
                }
                // Effects the log can never take: the letter stays parked, now
                // with the log's reason.
                Err(e) if e.class() == ErrorClass::Refused => (
                    FailureKind::Rejected,
                    format!("the log refused the call's effects: {e}"),
                ),
                Err(e) => return Err(gone(id)(e)),
            }
        }
        Err(error) => (kind_of(&error.failure).0, error.failure.to_string()),
    };
    repark(d, &deployment, dl, attempt, failure).await
}

/// Replaces a letter whose replay failed with an updated one, in one commit
/// fenced by the old letter.
async fn repark(
    d: &Dispatcher,
    deployment: &super::Deployment,
    dl: DeadLetter,
    attempt: u32,
    (kind, why): (FailureKind, String),
) -> Result<ReplayOutcome, DispatchError> {
    let id = dl.id;
    let message = format!("replay (attempt {attempt}): {why}");
    let outcome = d
        .log
        .commit(ConsumerCommit {
            group: dl.group.clone(),
            dead_letter: Some(DeadLetterRecord {
                plugin_version: deployment.version_label(),
                plugin_digest: deployment.plugin.digest.clone(),
                kind,
                message: message.clone(),
                attempts: attempt,
                last_failure: SystemTime::now(),
                ..dl.record
            }),
            resolve_dead_letter: Some(id),
            ..Default::default()
        })
        .await
        .map_err(gone(id))?;
    Ok(ReplayOutcome::Failed {
        new_id: outcome.dead_letter.map_or(id.0, |n| n.0),
        message,
    })
}

pub(super) async fn replay_all(
    d: &Dispatcher,
    plugin: &str,
) -> Result<(usize, usize), DispatchError> {
    if d.plugin_parts(plugin).is_none() {
        return Err(DispatchError::PluginNotLoaded(plugin.to_owned()));
    }
    // Collect first: replays that fail again re-park under new ids, which a
    // paging cursor would otherwise meet again.
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = d.log.dead_letters(Some(plugin), after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        ids.extend(page.iter().map(|dl| dl.id));
    }
    let (mut ok, mut failed) = (0, 0);
    for id in ids {
        match replay(d, id).await {
            Ok(ReplayOutcome::Succeeded) => ok += 1,
            Ok(ReplayOutcome::Failed { .. }) => failed += 1,
            // Resolved meanwhile by someone else, or being replayed right now.
            Err(DispatchError::UnknownDeadLetter(_) | DispatchError::ReplayInProgress(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((ok, failed))
}
