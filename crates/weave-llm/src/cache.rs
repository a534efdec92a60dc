//! The per-request cache: every answer an LLM gave, under a key of what decides it, so that
//! a re-run or a resumed run never sends a request that already has an answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use weave_cache::{Key, KeyBuilder, Packs, Store, codec};

use super::client::Answer;

/// A stored answer and the token limit it was asked with (not part of the key: see
/// [`RequestCache::get`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    answer: Answer,
    max_tokens: Option<u64>,
}

/// The answers of the run's cache folder (`.weave/cache`, shared with the step outputs).
///
/// Answers are appended to the cache's packs ([`Packs`]): one file per process, synced
/// for a group of answers at once, where a file per answer cost a new inode and a sync
/// each (about 2,000 answers a second, short of what an inference server at 1,024
/// requests in flight returns). Answers stored by an earlier version, as entries of their
/// own, are still read.
#[derive(Debug)]
pub(crate) struct RequestCache {
    dir: PathBuf,
    store: OnceLock<Option<(Store, Packs)>>,
    warned: AtomicBool,
}

/// The key of a request: blake3 over the endpoint and the canonical JSON of everything in
/// the request that can change the answer (the model, the messages, the sampling
/// parameters, the seed, the response format) — never the token limit, the concurrency or
/// the timeout, which do not change an answer that was not cut off.
pub(crate) fn request_key(url: &str, request_without_max_tokens: &serde_json::Value) -> Key {
    let mut canonical = String::new();
    write_canonical(request_without_max_tokens, &mut canonical);
    KeyBuilder::new("llm-request").part("url", url.as_bytes()).part("request", canonical.as_bytes()).finish()
}

/// JSON with every object's keys in order, so that the bytes do not depend on how the
/// request was put together.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl RequestCache {
    /// The cache in `dir`, opened when first used.
    pub(crate) fn new(dir: PathBuf) -> Self {
        RequestCache { dir, store: OnceLock::new(), warned: AtomicBool::new(false) }
    }

    fn store(&self) -> Option<&(Store, Packs)> {
        self.store
            .get_or_init(|| match Store::open(&self.dir).and_then(|s| Ok((s, Packs::shared(&self.dir)?))) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!(
                        "cannot open the cache in {} ({e}); LLM answers will not be kept, and a re-run pays for them again",
                        self.dir.display()
                    );
                    None
                }
            })
            .as_ref()
    }

    /// The answer stored under `key`, if it is the answer a request with this token limit
    /// would get: an answer that was not cut off serves any limit it fits in (a limit of
    /// `None` is no limit); an answer cut off at its limit serves only that same limit.
    pub(crate) fn get(&self, key: &Key, max_tokens: Option<u64>) -> Option<Answer> {
        let (store, packs) = self.store()?;
        let found = match packs.get(key) {
            Some((codec::BINCODE2, bytes)) => Ok(codec::decode::<Entry>(&bytes)),
            Some((other, _)) => {
                log::warn!(
                    "the cached LLM answer {key} is in codec {other}, which this version does not read; asking again"
                );
                Ok(None)
            }
            None => store.get_decoded::<Entry>(key),
        };
        let entry = match found {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                self.warn(&e);
                return None;
            }
        };
        serves(&entry, max_tokens).then_some(entry.answer)
    }

    /// Stores an answer durably (it was paid for), and returns at once: the cache's pack
    /// thread writes it with the answers stored meanwhile, syncs them once, and calls
    /// `then`. A failure (warned about) costs only a later re-run.
    pub(crate) fn put_then(
        self: &Arc<Self>,
        key: &Key,
        answer: &Answer,
        max_tokens: Option<u64>,
        then: impl FnOnce() + Send + 'static,
    ) {
        let Some((_, packs)) = self.store() else { return then() };
        let entry = Entry { answer: answer.clone(), max_tokens };
        let bytes = match codec::encode(&entry) {
            Ok(b) => b,
            Err(e) => {
                self.warn(&e);
                return then();
            }
        };
        let me = Arc::clone(self);
        packs.append_then(
            key,
            codec::BINCODE2,
            &bytes,
            Box::new(move |r| {
                if let Err(e) = r {
                    me.warn(&e);
                }
                then();
            }),
        );
    }

    /// [`RequestCache::put_then`], returning once the answer is on disk.
    #[cfg(test)]
    pub(crate) fn put(self: &Arc<Self>, key: &Key, answer: &Answer, max_tokens: Option<u64>) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.put_then(key, answer, max_tokens, move || {
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }

    /// The newest batch of the Batch API that the request under `key` was put in (by a
    /// run that stopped before its answer came), and the generation a new batch of it
    /// takes: entries are never rewritten, so each batch a request goes to is an entry of
    /// its own, numbered from 0.
    pub(crate) fn pending(&self, key: &Key) -> (Option<Pending>, u32) {
        let Some((_, packs)) = self.store() else { return (None, 0) };
        let (mut last, mut generation) = (None, 0);
        while let Some((codec::BINCODE2, bytes)) = packs.get(&pending_key(key, generation)) {
            last = codec::decode::<Pending>(&bytes);
            generation += 1;
        }
        (last, generation)
    }

    /// Stores, for each request key and its generation, the batch it was put in, and
    /// returns once every entry is on disk (a batch whose id is lost is paid for twice).
    pub(crate) async fn put_pending(self: &Arc<Self>, requests: &[(Key, u32)], batch: &Pending) {
        let Some((_, packs)) = self.store() else { return };
        let bytes = match codec::encode(batch) {
            Ok(b) => b,
            Err(e) => return self.warn(&e),
        };
        let mut waits = Vec::with_capacity(requests.len());
        for (key, generation) in requests {
            let (stored, on_disk) = tokio::sync::oneshot::channel();
            let me = Arc::clone(self);
            packs.append_then(
                &pending_key(key, *generation),
                codec::BINCODE2,
                &bytes,
                Box::new(move |r| {
                    if let Err(e) = r {
                        me.warn(&e);
                    }
                    let _ = stored.send(());
                }),
            );
            waits.push(on_disk);
        }
        for w in waits {
            let _ = w.await;
        }
    }

    fn warn(&self, e: &weave_cache::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!("the cache of LLM answers in {} failed ({e}); going on without it", self.dir.display());
        }
    }
}

/// A batch of the Batch API that requests were put in: what a resumed run polls rather
/// than sending them again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    /// The batch's id (`batch_...`).
    pub(crate) batch_id: String,
    /// Its input file's id.
    pub(crate) input_file_id: String,
}

/// Where the batch of generation `generation` of the request under `key` is kept.
fn pending_key(key: &Key, generation: u32) -> Key {
    KeyBuilder::new("llm-batch-pending").key("request", key).number("generation", u64::from(generation)).finish()
}

/// Whether a stored entry is the answer to a request with the token limit `max_tokens`.
fn serves(entry: &Entry, max_tokens: Option<u64>) -> bool {
    if entry.answer.truncated() {
        // Cut off at its limit: a larger limit would have let it go on.
        entry.max_tokens == max_tokens
    } else {
        max_tokens.is_none_or(|m| entry.answer.completion_tokens <= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(finish: &str, completion_tokens: u64) -> Answer {
        Answer {
            content: "hi".into(),
            finish_reason: Some(finish.into()),
            prompt_tokens: 5,
            completion_tokens,
            model: None,
        }
    }

    #[test]
    fn keys_ignore_key_order_and_see_every_value() {
        let a = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"temperature":0.7,"messages":[{"content":"x","role":"user"}],"model":"m"}"#)
                .unwrap();
        assert_eq!(request_key("u", &a), request_key("u", &b));
        let c = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.8});
        assert_ne!(request_key("u", &a), request_key("u", &c));
        assert_ne!(request_key("u", &a), request_key("v", &a), "another endpoint");
    }

    #[test]
    fn a_finished_answer_serves_any_limit_it_fits_a_cut_one_only_its_own() {
        let done = Entry { answer: answer("stop", 40), max_tokens: Some(100) };
        assert!(serves(&done, Some(100)));
        assert!(serves(&done, Some(4000)), "a larger limit changes nothing");
        assert!(serves(&done, None));
        assert!(serves(&done, Some(40)));
        assert!(!serves(&done, Some(39)), "a smaller limit would cut it off");
        let cut = Entry { answer: answer("length", 100), max_tokens: Some(100) };
        assert!(serves(&cut, Some(100)));
        assert!(!serves(&cut, Some(200)), "a larger limit lets the answer go on: ask again");
        assert!(!serves(&cut, None));
    }

    #[test]
    fn answers_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(RequestCache::new(dir.path().to_path_buf()));
        let key = request_key("u", &serde_json::json!({"model": "m"}));
        assert!(cache.get(&key, None).is_none());
        cache.put(&key, &answer("stop", 3), Some(10));
        assert_eq!(cache.get(&key, Some(10)).map(|a| a.content), Some("hi".into()));
        // Another run in this process sees it too.
        let again = RequestCache::new(dir.path().to_path_buf());
        assert!(again.get(&key, Some(2)).is_none());
        assert!(again.get(&key, Some(20)).is_some());
        // Kept in a pack, where another process reads it, not as a file of its own.
        let (bytes, objects) = (
            Packs::open(dir.path()).unwrap().get(&key).unwrap().1,
            std::fs::read_dir(dir.path().join("objects")).unwrap().count(),
        );
        assert_eq!(codec::decode::<Entry>(&bytes).unwrap().answer.content, "hi");
        assert_eq!(objects, 0);
    }

    #[test]
    fn answers_stored_as_entries_of_their_own_by_an_earlier_version_are_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let key = request_key("u", &serde_json::json!({"model": "old"}));
        let entry = Entry { answer: answer("stop", 3), max_tokens: None };
        Store::open(dir.path()).unwrap().put(&key, codec::BINCODE2, &codec::encode(&entry).unwrap()).unwrap();
        let cache = RequestCache::new(dir.path().to_path_buf());
        assert_eq!(cache.get(&key, None).map(|a| a.content), Some("hi".into()));
    }
}
