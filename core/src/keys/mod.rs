//! Epoch keys. A producer instance seals under epoch secrets it generated
//! itself and rotates by time and by record count; every holder deletes a key
//! once its retention has passed. Topic keys are derived per topic, so a key
//! handed to a consumer of one topic opens nothing else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::format::{DataKey, EpochSecret, InstanceId, KeyId};

/// The maps looked up per record: foldhash (randomly seeded) is a few ns
/// where SipHash takes ~20. Only keys that arrived authenticated, and the
/// host's own topics, are ever inserted, so a peer cannot flood them.
type FastMap<K, V> = foldhash::HashMap<K, V>;

/// How long keys live. All times are Unix milliseconds supplied by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// A producer moves to a new epoch after this long (`e2ee.key.rotation.ms`).
    pub rotation_ms: u64,
    /// ... or after this many records, whichever comes first. At most
    /// `u32::MAX`, because the record counter is the nonce.
    pub rotation_records: u32,
    /// Every holder deletes an epoch's keys this long after the epoch ended
    /// (`e2ee.key.retention.ms`): the exposure window.
    pub retention_ms: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            rotation_ms: 15 * 60 * 1000,
            rotation_records: 100_000_000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// One epoch of one producer instance.
pub struct ProducerEpoch {
    pub key_id: KeyId,
    secret: EpochSecret,
    pub started_ms: u64,
    /// `u64::MAX` while the epoch may still seal.
    ended_ms: AtomicU64,
    counter: AtomicU64,
    topic_keys: RwLock<FastMap<String, Arc<DataKey>>>,
}

impl core::fmt::Debug for ProducerEpoch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProducerEpoch")
            .field("key_id", &self.key_id)
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

impl ProducerEpoch {
    pub fn new(key_id: KeyId, secret: EpochSecret, started_ms: u64, ended_ms: u64) -> Self {
        ProducerEpoch {
            key_id,
            secret,
            started_ms,
            ended_ms: AtomicU64::new(ended_ms),
            counter: AtomicU64::new(0),
            topic_keys: RwLock::new(FastMap::default()),
        }
    }

    pub fn secret(&self) -> &EpochSecret {
        &self.secret
    }

    pub fn ended_ms(&self) -> u64 {
        self.ended_ms.load(Ordering::Acquire)
    }

    fn end(&self, now_ms: u64) {
        self.ended_ms.fetch_min(now_ms, Ordering::AcqRel);
    }

    /// Claims the next record counter, or `None` once the epoch is used up or
    /// ended. Counters are unique across threads because they come from one
    /// atomic; the 64-bit counter cannot wrap before the limit check.
    fn next_counter(&self, limit: u32) -> Option<u32> {
        if self.ended_ms() != u64::MAX {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if n < u64::from(limit) {
            u32::try_from(n).ok()
        } else {
            None
        }
    }

    pub fn records_sealed(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// The topic key, derived once per topic and cached for the epoch.
    pub fn topic_key(&self, topic: &str) -> Arc<DataKey> {
        if let Some(k) = self.cached_topic_key(topic) {
            return k;
        }
        let key = Arc::new(DataKey::derive(&self.secret, self.key_id, topic));
        let mut map = self
            .topic_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(topic.to_owned()).or_insert(key))
    }

    /// The topic key without caching it: for keys asked for by peers (or
    /// needed to read a record back), whose topic names are theirs to
    /// choose. The cache, and so `topics()` and the envelopes sealed for
    /// them, holds only the topics this instance sealed to or prepared.
    pub fn derive_topic_key(&self, topic: &str) -> Arc<DataKey> {
        self.cached_topic_key(topic)
            .unwrap_or_else(|| Arc::new(DataKey::derive(&self.secret, self.key_id, topic)))
    }

    fn cached_topic_key(&self, topic: &str) -> Option<Arc<DataKey>> {
        self.topic_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .map(Arc::clone)
    }

    /// The topics sealed to (or prepared) under this epoch so far, sorted
    /// (the map's order is randomly seeded; callers must be deterministic).
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .topic_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        topics.sort_unstable();
        topics
    }

    /// When every holder must have deleted this epoch's keys.
    pub fn delete_at_ms(&self, policy: &KeyPolicy) -> u64 {
        let end = match self.ended_ms() {
            u64::MAX => self.started_ms.saturating_add(policy.rotation_ms),
            e => e,
        };
        end.saturating_add(policy.retention_ms)
    }
}

/// The producer role's keys: the epoch it seals under, the next one (made and
/// persisted ahead of use, so rotation never waits), and retained old ones.
#[derive(Debug)]
pub struct ProducerKeys {
    current: RwLock<Option<Arc<ProducerEpoch>>>,
    next: RwLock<Option<Arc<ProducerEpoch>>>,
    /// Every epoch still within retention, current and next included, by key id;
    /// also epochs restored from an earlier run of this instance.
    retained: RwLock<BTreeMap<KeyId, Arc<ProducerEpoch>>>,
}

impl Default for ProducerKeys {
    fn default() -> Self {
        ProducerKeys {
            current: RwLock::new(None),
            next: RwLock::new(None),
            retained: RwLock::new(BTreeMap::new()),
        }
    }
}

/// What sealing one record needs: the epoch's key for the topic and a fresh counter.
#[derive(Debug)]
pub struct SealingKey {
    pub key_id: KeyId,
    pub counter: u32,
    pub key: Arc<DataKey>,
}

impl ProducerKeys {
    pub fn current(&self) -> Option<Arc<ProducerEpoch>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn next(&self) -> Option<Arc<ProducerEpoch>> {
        self.next
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key and counter for one record. Rotates to the prepared next epoch
    /// when the current one is used up; `None` when no fresh epoch is ready.
    pub fn sealing_key(&self, topic: &str, policy: &KeyPolicy, now_ms: u64) -> Option<SealingKey> {
        for _ in 0..2 {
            let epoch = self.current()?;
            if let Some(counter) = epoch.next_counter(policy.rotation_records) {
                return Some(SealingKey {
                    key_id: epoch.key_id,
                    counter,
                    key: epoch.topic_key(topic),
                });
            }
            self.promote_next(&epoch, now_ms)?;
        }
        None
    }

    /// Ends `expected` (if it is still current) and makes the prepared next
    /// epoch current. Returns the new current epoch, or `None` if none was ready.
    pub fn promote_next(
        &self,
        expected: &Arc<ProducerEpoch>,
        now_ms: u64,
    ) -> Option<Arc<ProducerEpoch>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cur) = current.as_ref() {
            if !Arc::ptr_eq(cur, expected) {
                // Another thread rotated first.
                return Some(Arc::clone(cur));
            }
        }
        let next = self
            .next
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(cur) = current.as_ref() {
            cur.end(now_ms);
        }
        *current = next.clone();
        next
    }

    /// Installs the very first epoch (or a replacement after fork).
    pub fn install_current(&self, epoch: Arc<ProducerEpoch>, now_ms: u64) {
        self.retain(Arc::clone(&epoch));
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = current.replace(epoch) {
            old.end(now_ms);
        }
    }

    pub fn install_next(&self, epoch: Arc<ProducerEpoch>) {
        self.retain(Arc::clone(&epoch));
        *self.next.write().unwrap_or_else(PoisonError::into_inner) = Some(epoch);
    }

    /// Forgets the sealing epochs, e.g. in a forked child, which must never
    /// seal under its parent's keys and counters.
    pub fn abandon_sealing(&self, now_ms: u64) {
        if let Some(cur) = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            cur.end(now_ms);
        }
        if let Some(next) = self
            .next
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            next.end(now_ms);
        }
    }

    pub fn retain(&self, epoch: Arc<ProducerEpoch>) {
        self.retained
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(epoch.key_id, epoch);
    }

    pub fn get(&self, key_id: &KeyId) -> Option<Arc<ProducerEpoch>> {
        self.retained
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ProducerEpoch>> {
        self.retained
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The newest epoch number used under `producer`, so a restored instance
    /// id never reuses one.
    pub fn max_epoch(&self, producer: InstanceId) -> Option<u32> {
        self.retained
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|k| k.producer == producer)
            .map(|k| k.epoch)
            .max()
    }

    /// Deletes epochs past retention, or (shred) every epoch that started
    /// before `shred_before_ms`. Returns how many were deleted. The secrets
    /// are zeroized when the last reference drops.
    pub fn purge(&self, now_ms: u64, policy: &KeyPolicy, shred_before_ms: Option<u64>) -> usize {
        let current = self.current().map(|c| c.key_id);
        let next = self.next().map(|c| c.key_id);
        let mut removed = Vec::new();
        self.retained
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, e| {
                let sealing = Some(*id) == current || Some(*id) == next;
                let expired = !sealing && e.delete_at_ms(policy) <= now_ms;
                let shredded = shred_before_ms.is_some_and(|t| e.started_ms < t);
                if expired || shredded {
                    removed.push(*id);
                    false
                } else {
                    true
                }
            });
        if let Some(t) = shred_before_ms {
            // A shredded sealing epoch must not seal again.
            if let Some(cur) = self.current() {
                if cur.started_ms < t {
                    self.abandon_sealing(now_ms);
                }
            }
        }
        removed.len()
    }
}

/// A topic key received from its producer or another holder.
#[derive(Debug, Clone)]
pub struct HeldKey {
    pub key: Arc<DataKey>,
    pub epoch_started_ms: u64,
    pub delete_at_ms: u64,
    /// The producer's signed statement for this key, relayed with it when
    /// this holder serves it (key exchange v2); `None` for a key a version 1
    /// producer delivered itself, which is never relayed.
    pub statement: Option<Arc<crate::exchange::statement::Statement>>,
}

/// The consumer role's keys: topic keys by key id and topic.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: RwLock<FastMap<KeyId, FastMap<String, HeldKey>>>,
}

impl Keyring {
    pub fn get(&self, key_id: &KeyId, topic: &str) -> Option<HeldKey> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .and_then(|m| m.get(topic))
            .cloned()
    }

    /// Inserts a key unless one is held already; returns whether it was new.
    pub fn insert(&self, key_id: KeyId, topic: &str, held: HeldKey) -> bool {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let per_topic = keys.entry(key_id).or_default();
        if per_topic.contains_key(topic) {
            return false;
        }
        per_topic.insert(topic.to_owned(), held);
        true
    }

    /// Attaches the producer's statement to a held key (restoring state).
    pub fn attach_statement(
        &self,
        key_id: &KeyId,
        topic: &str,
        statement: Arc<crate::exchange::statement::Statement>,
    ) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = keys.get_mut(key_id).and_then(|m| m.get_mut(topic)) {
            h.statement = Some(statement);
        }
    }

    pub fn all(&self) -> Vec<(KeyId, String, HeldKey)> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter()
            .flat_map(|(id, m)| m.iter().map(move |(t, h)| (*id, t.clone(), h.clone())))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(FastMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes keys past their deletion time, or (shred) of epochs that
    /// started before `shred_before_ms`. Returns how many were deleted.
    pub fn purge(&self, now_ms: u64, shred_before_ms: Option<u64>) -> usize {
        let mut removed = 0;
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.retain(|_, per_topic| {
            per_topic.retain(|_, h| {
                let keep = h.delete_at_ms > now_ms
                    && shred_before_ms.is_none_or(|t| h.epoch_started_ms >= t);
                if !keep {
                    removed += 1;
                }
                keep
            });
            !per_topic.is_empty()
        });
        removed
    }
}
