//! Dead-letter replay: the parked event is called on the *current* version of
//! its plugin. Success commits the call's effects and removes the dead letter
//! in one transaction; failure replaces the record with an updated one.

use std::sync::Arc;
use std::time::SystemTime;

use super::consumer::kind_of;
use super::overlay::Overlay;
use super::{DispatchError, Dispatcher, ReplayOutcome};
use crate::log::{ConsumerCommit, DeadLetterId, DeadLetterRecord, NewEvent, StateChange};
use crate::runtime::InstanceSettings;

/// Dead letters listed per page by `replay_all`.
const PAGE: usize = 256;

pub(super) async fn replay(
    d: &Dispatcher,
    id: DeadLetterId,
) -> Result<ReplayOutcome, DispatchError> {
    let dl = d
        .log
        .dead_letter(id)
        .await?
        .ok_or(DispatchError::UnknownDeadLetter(id))?;
    let plugin = dl.record.plugin.clone();
    let (deployment, shared) = d
        .plugin_parts(&plugin)
        .ok_or_else(|| DispatchError::PluginNotLoaded(plugin.clone()))?;
    let overlay = Arc::new(Overlay::new(d.log.clone()));
    let settings = InstanceSettings {
        limits: deployment.settings.limits.clone(),
        grants: deployment.settings.grants.clone(),
        config: deployment.settings.config.clone(),
        state: overlay,
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
    match result {
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
            d.log
                .commit(ConsumerCommit {
                    group: dl.group.clone(),
                    emits: effects
                        .emits
                        .into_iter()
                        .map(|e| NewEvent::to_topic(e.topic, e.event))
                        .collect(),
                    state,
                    resolve_dead_letter: Some(id),
                    ..Default::default()
                })
                .await?;
            Ok(ReplayOutcome::Succeeded)
        }
        Err(error) => {
            let (kind, _) = kind_of(&error.failure);
            let message = format!("replay (attempt {attempt}): {}", error.failure);
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
                .await?;
            Ok(ReplayOutcome::Failed {
                new_id: outcome.dead_letter.map_or(id.0, |n| n.0),
                message,
            })
        }
    }
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
        match replay(d, id).await? {
            ReplayOutcome::Succeeded => ok += 1,
            ReplayOutcome::Failed { .. } => failed += 1,
        }
    }
    Ok((ok, failed))
}
