//! Work sharing between daemons on one log (NATS): which partitions this daemon works.
//!
//! Every `tick` the coordinator announces the daemon (a heartbeat naming the plugins it has
//! loaded), reads the members and leases, renews what it holds, and decides: each partition
//! of each plugin belongs to one live member that has the plugin, chosen by rendezvous
//! hashing (so every daemon computes the same owner from the same view, and a join or a
//! death moves only the partitions it must). It takes a lease that is free, released, or
//! expired — a record whose version did not move for a whole `period` on this daemon's own
//! clock — when it is the chosen owner (or when the lease stayed expired for two periods,
//! whoever the owner should be). A lease it holds but should not any more is offered up:
//! the supervisor stops that consumer after its batch and the lease is released, so the
//! new owner starts at once from the committed offset.
//!
//! Leases decide who works; the fence in every commit ([`LeaseFence`]) decides what counts:
//! whatever the timing, a daemon that lost a lease commits nothing under it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::log::{EventLog, LeaseFence, LeaseKey, LeaseState, LogError, MemberState};

/// How leases are timed.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// A member or lease whose record did not move for this long is taken for gone. Bounds
    /// how long the partitions of a daemon killed outright stay unworked (plus one `tick`).
    pub period: Duration,
    /// How often the coordinator heartbeats, renews and decides.
    pub tick: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            period: Duration::from_secs(5),
            tick: Duration::from_secs(1),
        }
    }
}

/// A partition of a topic.
pub(super) type Part = (String, u32);

pub(super) struct Coordinator {
    log: Arc<dyn EventLog>,
    id: String,
    settings: LeaseSettings,
    state: Mutex<State>,
    /// Bumped whenever the held set changes; supervisors wake on it.
    changed: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Plugin → the partitions its subscriptions match and those its consumers run.
    plugins: BTreeMap<String, Wants>,
    held: BTreeMap<LeaseKey, LeaseFence>,
    /// Held leases being given up: released once their consumer stopped.
    releasing: BTreeSet<LeaseKey>,
    leases_seen: HashMap<LeaseKey, Observed>,
    members_seen: HashMap<String, Observed>,
    /// The members taken for live at the last round (this daemon included).
    live: BTreeSet<String>,
}

#[derive(Default)]
struct Wants {
    wanted: BTreeSet<Part>,
    running: BTreeSet<Part>,
}

/// A record's version as this daemon last saw it, and since when.
struct Observed {
    version: u64,
    since: Instant,
    /// Seen to change at least once: a record met for the first time may be a dead
    /// daemon's, so it proves nothing until it moves.
    moved: bool,
}

impl Observed {
    fn see(seen: Option<&mut Observed>, version: u64, now: Instant) -> Option<Observed> {
        match seen {
            Some(o) if o.version == version => None,
            Some(o) => {
                *o = Observed {
                    version,
                    since: now,
                    moved: true,
                };
                None
            }
            None => Some(Observed {
                version,
                since: now,
                moved: false,
            }),
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Rendezvous hashing: the member with the highest score for `key` owns it.
fn score(member: &str, key: &LeaseKey) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [member, &key.group, &key.topic, &key.partition.to_string()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

fn owner_of<'m>(candidates: &[&'m str], key: &LeaseKey) -> Option<&'m str> {
    candidates.iter().copied().max_by_key(|m| score(m, key))
}

impl Coordinator {
    /// A coordinator for `log` when several daemons may share it, running until
    /// [`Coordinator::shutdown`]; `None` for a log this daemon works alone.
    pub fn start(log: Arc<dyn EventLog>, settings: LeaseSettings) -> Option<Arc<Self>> {
        log.leases()?;
        // One per process in a daemon; tests run several dispatchers in one process.
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = match STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => super::incarnation().to_owned(),
            n => format!("{}.{n}", super::incarnation()),
        };
        let coordinator = Arc::new(Coordinator {
            log,
            id,
            settings,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            stop: watch::channel(false).0,
        });
        tracing::info!(member = %coordinator.id, "sharing the log's partitions with other daemons through leases");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run(coordinator.clone()));
            }
            // Without leases no partition may be worked: none is.
            Err(_) => tracing::error!(
                "the log is shared by daemons but dispatch started outside a tokio runtime: no partition will be worked"
            ),
        }
        Some(coordinator)
    }

    /// What `plugin`'s supervisor matched and runs now.
    pub fn report(&self, plugin: &str, wanted: &[Part], running: impl Iterator<Item = Part>) {
        let mut state = lock(&self.state);
        let wants = state.plugins.entry(plugin.to_owned()).or_default();
        wants.wanted = wanted.iter().cloned().collect();
        wants.running = running.collect();
    }

    /// The partitions of `plugin` this daemon holds and works, with their fences.
    pub fn held(&self, plugin: &str) -> BTreeMap<Part, LeaseFence> {
        let state = lock(&self.state);
        state
            .held
            .iter()
            .filter(|(k, _)| k.group == plugin && !state.releasing.contains(*k))
            .map(|(k, f)| ((k.topic.clone(), k.partition), f.clone()))
            .collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A consumer found its lease taken (a commit refused with `LeaseLost`).
    pub fn lost(&self, fence: &LeaseFence) {
        let mut state = lock(&self.state);
        if state.held.get(&fence.key) == Some(fence) {
            state.held.remove(&fence.key);
            state.releasing.remove(&fence.key);
            drop(state);
            self.bump();
        }
    }

    /// `plugin` is unloaded: its leases go once its consumers stopped.
    pub fn forget(&self, plugin: &str) {
        let mut state = lock(&self.state);
        state.plugins.remove(plugin);
        let mine: Vec<_> = state
            .held
            .keys()
            .filter(|k| k.group == plugin)
            .cloned()
            .collect();
        state.releasing.extend(mine);
    }

    /// Stops deciding, releases every lease (the consumers must have stopped) and leaves.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let Some(leases) = self.log.leases() else {
            return;
        };
        let held: Vec<_> = std::mem::take(&mut lock(&self.state).held)
            .into_values()
            .collect();
        for fence in held {
            if let Err(e) = leases.release(&fence).await {
                tracing::debug!(lease = %fence.key, "not released at shutdown: {e}");
            }
        }
        if let Err(e) = leases.leave(&self.id).await {
            tracing::warn!(member = %self.id, "could not announce leaving the log: {e}");
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    async fn tick(&self) -> Result<(), LogError> {
        let Some(leases) = self.log.leases() else {
            return Ok(());
        };
        let groups: Vec<String> = lock(&self.state).plugins.keys().cloned().collect();
        leases.heartbeat(&self.id, groups).await?;
        let members = leases.members().await?;
        let records = leases.leases().await?;
        let now = Instant::now();
        let live = self.observe(&members, &records, now);

        // Renew what is held; a renewal refused means another daemon has it now.
        let held: Vec<LeaseFence> = lock(&self.state).held.values().cloned().collect();
        let mut changed = false;
        for fence in held {
            match leases.renew(&fence).await {
                Ok(()) => {}
                Err(LogError::LeaseLost(_)) => {
                    tracing::warn!(lease = %fence.key, "lease lost to another daemon");
                    let mut state = lock(&self.state);
                    state.held.remove(&fence.key);
                    state.releasing.remove(&fence.key);
                    changed = true;
                }
                Err(e) => tracing::warn!(lease = %fence.key, "cannot renew the lease: {e}"),
            }
        }
        // Release what was given up once its consumer stopped.
        let done: Vec<LeaseFence> = {
            let state = lock(&self.state);
            state
                .releasing
                .iter()
                .filter(|k| {
                    !state
                        .plugins
                        .get(&k.group)
                        .is_some_and(|w| w.running.contains(&(k.topic.clone(), k.partition)))
                })
                .filter_map(|k| state.held.get(k).cloned())
                .collect()
        };
        for fence in done {
            match leases.release(&fence).await {
                Ok(()) | Err(LogError::LeaseLost(_)) => {
                    tracing::info!(lease = %fence.key, "lease handed over");
                    let mut state = lock(&self.state);
                    state.held.remove(&fence.key);
                    state.releasing.remove(&fence.key);
                }
                Err(e) => tracing::warn!(lease = %fence.key, "cannot release the lease: {e}"),
            }
        }
        // Decide: give up what belongs elsewhere, take what is ours and free.
        let records: HashMap<LeaseKey, LeaseState> =
            records.into_iter().map(|r| (r.key.clone(), r)).collect();
        let plan = self.plan(&members, &live, &records, now);
        changed |= plan.changed;
        for (key, seen) in plan.acquire {
            match leases.acquire(&key, &self.id, seen).await {
                Ok(fence) => {
                    tracing::info!(lease = %key, epoch = fence.epoch, "lease taken");
                    lock(&self.state).held.insert(key, fence);
                    changed = true;
                }
                Err(e) => tracing::debug!(lease = %key, "not taken: {e}"),
            }
        }
        if changed {
            self.bump();
        }
        Ok(())
    }

    /// Records what moved; answers the members taken for live (this daemon included).
    fn observe(
        &self,
        members: &[MemberState],
        records: &[LeaseState],
        now: Instant,
    ) -> BTreeSet<String> {
        let mut state = lock(&self.state);
        for m in members {
            if let Some(new) = Observed::see(state.members_seen.get_mut(&m.id), m.version, now) {
                state.members_seen.insert(m.id.clone(), new);
            }
        }
        for r in records {
            if let Some(new) = Observed::see(state.leases_seen.get_mut(&r.key), r.version, now) {
                state.leases_seen.insert(r.key.clone(), new);
            }
        }
        let period = self.settings.period;
        let mut live: BTreeSet<String> = members
            .iter()
            .filter(|m| {
                state
                    .members_seen
                    .get(&m.id)
                    .is_some_and(|o| o.moved && now.duration_since(o.since) < period)
            })
            .map(|m| m.id.clone())
            .collect();
        live.insert(self.id.clone());
        state.live = live.clone();
        live
    }

    /// This daemon's member id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether member `id` was live at the last round.
    pub fn is_live(&self, id: &str) -> bool {
        id == self.id || lock(&self.state).live.contains(id)
    }

    fn plan(
        &self,
        members: &[MemberState],
        live: &BTreeSet<String>,
        records: &HashMap<LeaseKey, LeaseState>,
        now: Instant,
    ) -> Plan {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let period = self.settings.period;
        let mut plan = Plan::default();
        for (plugin, wants) in &state.plugins {
            let mut candidates: Vec<&str> = members
                .iter()
                .filter(|m| live.contains(&m.id) && m.groups.iter().any(|g| g == plugin))
                .map(|m| m.id.as_str())
                .collect();
            if !candidates.contains(&self.id.as_str()) {
                candidates.push(&self.id);
            }
            for (topic, partition) in &wants.wanted {
                let key = LeaseKey {
                    group: plugin.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                let mine = owner_of(&candidates, &key) == Some(self.id.as_str());
                if state.held.contains_key(&key) {
                    if !mine && state.releasing.insert(key) {
                        plan.changed = true;
                    }
                    continue;
                }
                let Some(r) = records.get(&key) else {
                    if mine {
                        plan.acquire.push((key, 0));
                    }
                    continue;
                };
                // How long the record has not moved, on this daemon's clock.
                let still = state
                    .leases_seen
                    .get(&key)
                    .map_or(Duration::ZERO, |o| now.duration_since(o.since));
                let (free, orphaned) = match &r.owner {
                    None => (true, still >= period),
                    Some(owner) if *owner == self.id => {
                        // Taken by this daemon in a request whose answer was lost.
                        let fence = LeaseFence {
                            key: key.clone(),
                            owner: owner.clone(),
                            epoch: r.epoch,
                        };
                        state.held.insert(key, fence);
                        plan.changed = true;
                        continue;
                    }
                    Some(_) => (still >= period, still >= period * 2),
                };
                // The chosen owner takes a free lease; one nobody took for a while goes to
                // whoever sees it (views of who is live may disagree for a moment).
                if free && (mine || orphaned) {
                    plan.acquire.push((key, r.version));
                }
            }
        }
        // Held partitions no plugin wants any more (a topic gone, a plugin unloaded).
        for key in state.held.keys() {
            let wanted = state
                .plugins
                .get(&key.group)
                .is_some_and(|w| w.wanted.contains(&(key.topic.clone(), key.partition)));
            if !wanted && state.releasing.insert(key.clone()) {
                plan.changed = true;
            }
        }
        plan
    }
}

#[derive(Default)]
struct Plan {
    /// Leases to take, with the version they were seen at.
    acquire: Vec<(LeaseKey, u64)>,
    /// The held set as supervisors see it changed.
    changed: bool,
}

async fn run(coordinator: Arc<Coordinator>) {
    let mut stop = coordinator.stop.subscribe();
    loop {
        if let Err(e) = coordinator.tick().await {
            tracing::warn!(member = %coordinator.id, "lease round failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(coordinator.settings.tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
