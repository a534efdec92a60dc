//! Batch inference: with `batch = true` in the provider's table, a step's requests that
//! the cache does not answer go out through the provider's OpenAI-compatible Batch API
//! rather than one by one: a JSONL file uploaded to `/files` (one line per request, its
//! `custom_id` the request's cache key), a batch created on `/batches` over it, polled
//! every `batch_poll_interval` until it ends, and its output and error files downloaded.
//! Every answer goes to the answer cache under the key a request sent on its own has, so
//! the two ways share their answers.
//!
//! Resumable: once a batch exists, each of its requests' keys gets an entry in the cache
//! naming it ([`cache::Pending`]), written before the batch is polled. A run that stops
//! (Ctrl-C, a kill, a failure elsewhere) leaves the batch running at the provider; the
//! next run finds the entries, polls that batch and downloads its answers, sending none of
//! its requests again. A batch that failed, expired or was cancelled has its unanswered
//! requests put in a new batch (a new generation of entries), at most `max_retries`
//! times per call.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weave_cache::Key;
use weave_core::StepError;

use super::cache::Pending;
use super::client::{self, Answer, CallError, Tally};
use super::{Done, LlmCall, Lookup, Prepared, Request, Worker};

/// How often a batch is polled when the provider does not say.
const DEFAULT_POLL: Duration = Duration::from_secs(30);

/// The endpoint every line of a batch asks.
const CHAT: &str = "/v1/chat/completions";

/// The most requests one batch takes (OpenAI's limit).
const MAX_LINES: usize = 50_000;

/// The largest input file one batch takes: half OpenAI's 200 MB, so that a provider with
/// a smaller limit is less likely to refuse it.
const MAX_BYTES: usize = 100 << 20;

/// The requests of one call sent through the Batch API: what became of each miss.
struct Settled {
    results: Vec<Option<Result<Answer, CallError>>>,
    tally: Tally,
    /// Batches created.
    batches: u64,
}

impl LlmCall {
    /// [`LlmCall::run`]'s requests (already told apart) through the Batch API: the cache's
    /// answers first, the rest in a batch (or the batch a stopped run left them in).
    pub(crate) fn run_batch(
        &self,
        unique: Vec<Request>,
        ctx: &mut weave_core::StepContext,
    ) -> Result<Vec<Done>, StepError> {
        let mut done: Vec<Done> = Vec::with_capacity(unique.len());
        let mut misses: Vec<(usize, Prepared)> = Vec::new();
        for (index, r) in unique.iter().enumerate() {
            match self.worker.look_up(r) {
                Lookup::Hit(a) => done.push(Done { index, result: Ok((a, true)), tally: Tally::default() }),
                Lookup::Miss(p) => misses.push((index, p)),
            }
        }
        if misses.is_empty() {
            return Ok(done);
        }
        let runtime = client::runtime().map_err(StepError::fatal)?;
        let stop = ctx.cancel_flag();
        let cancelled = move || stop.load(std::sync::atomic::Ordering::Relaxed);
        let prepared: Vec<&Prepared> = misses.iter().map(|(_, p)| p).collect();
        let settled = runtime.block_on(self.worker.settle(&prepared, &cancelled, ctx.step_id()));
        let Settled { results, mut tally, batches } = match settled {
            Ok(s) => s,
            Err(CallError::Cancelled) => return Err(StepError::transient("the run is being cancelled")),
            Err(e) => {
                // A failure of the whole batch is every request's: the step stops.
                let fatal = Done { index: misses[0].0, result: Err(e), tally: Tally::default() };
                done.push(fatal);
                for (index, _) in &misses[1..] {
                    done.push(Done { index: *index, result: Err(CallError::Cancelled), tally: Tally::default() });
                }
                done.sort_by_key(|d| d.index);
                return Ok(done);
            }
        };
        ctx.add_stat("batches", batches as i64);
        for ((index, _), result) in misses.iter().zip(results) {
            let result = result.unwrap_or_else(|| Err(CallError::Rejected("the batch gave no answer".into())));
            done.push(Done { index: *index, result: result.map(|a| (a, false)), tally: std::mem::take(&mut tally) });
        }
        done.sort_by_key(|d| d.index);
        Ok(done)
    }
}

impl Worker {
    /// Answers `misses` through the Batch API; an error is the whole batch's.
    async fn settle(
        &self,
        misses: &[&Prepared],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
        step: &str,
    ) -> Result<Settled, CallError> {
        let mut results: Vec<Option<Result<Answer, CallError>>> = (0..misses.len()).map(|_| None).collect();
        let mut tally = Tally::default();
        let by_id: HashMap<String, usize> = misses.iter().enumerate().map(|(i, p)| (p.key.to_hex(), i)).collect();
        // Which requests a stopped run left in a batch, and each one's next generation.
        let mut generation = vec![0u32; misses.len()];
        let mut batches: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut fresh = Vec::new();
        for (i, p) in misses.iter().enumerate() {
            let (pending, next) = self.cache.as_ref().map_or((None, 0), |c| c.pending(&p.key));
            generation[i] = next;
            match pending {
                Some(b) => batches.entry(b.batch_id).or_default().push(i),
                None => fresh.push(i),
            }
        }
        // The batches a stopped run left: one the provider no longer has is sent anew.
        let left_by_a_run: Vec<String> = batches.keys().cloned().collect();
        let resumed: usize = batches.values().map(Vec::len).sum();
        if resumed > 0 {
            log::info!("{step}: {resumed} requests are in {} batches a stopped run left; polling them", batches.len());
        }
        let (mut rounds, mut created) = (0u32, 0u64);
        loop {
            for part in parts(misses, &fresh) {
                let id = self.submit(misses, &part, &mut generation, cancelled).await?;
                created += 1;
                tally.requests += part.len() as u64;
                log::info!("{step}: batch {id} holds {} requests", part.len());
                batches.insert(id, part);
            }
            fresh.clear();
            if batches.is_empty() {
                break;
            }
            for (id, members) in std::mem::take(&mut batches) {
                let ended = match self.wait(&id, cancelled).await {
                    Err(CallError::NotFound(why)) if left_by_a_run.contains(&id) => {
                        log::warn!(
                            "{step}: batch {id}, left by a stopped run, is gone ({why}); sending its requests anew"
                        );
                        fresh.extend(members);
                        continue;
                    }
                    other => other?,
                };
                let status = ended["status"].as_str().unwrap_or_default().to_owned();
                let got = match self.collect(&ended, misses, &by_id, &mut results, &members, cancelled).await {
                    Err(CallError::NotFound(why)) if left_by_a_run.contains(&id) => {
                        log::warn!("{step}: the answers of batch {id} are gone ({why}); sending its requests anew");
                        fresh.extend(members.iter().filter(|&&i| results[i].is_none()));
                        continue;
                    }
                    other => other?,
                };
                tally.failed += got.failed;
                let left: Vec<usize> = members.into_iter().filter(|&i| results[i].is_none()).collect();
                if left.is_empty() {
                    continue;
                }
                let why = match status.as_str() {
                    "failed" => format!("the provider refused batch {id}: {}", batch_errors(&ended)),
                    other => format!("batch {id} ended `{other}` before answering {} of its requests", left.len()),
                };
                if rounds >= self.retry.max_retries {
                    if status == "failed" {
                        return Err(CallError::Fatal(why));
                    }
                    for i in left {
                        results[i] = Some(Err(CallError::Rejected(why.clone())));
                    }
                    continue;
                }
                log::warn!("{step}: {why}; sending them in a new batch");
                tally.retries += left.len() as u64;
                fresh.extend(left);
            }
            rounds += 1;
        }
        Ok(Settled { results, tally, batches: created })
    }

    /// Uploads the requests `which` of `misses` as a batch's input file, creates the batch,
    /// and keeps its id under each request's key before returning it.
    async fn submit(
        &self,
        misses: &[&Prepared],
        which: &[usize],
        generation: &mut [u32],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<String, CallError> {
        let mut jsonl = Vec::new();
        for &i in which {
            let p = misses[i];
            jsonl.extend_from_slice(br#"{"custom_id":""#);
            jsonl.extend_from_slice(p.key.to_hex().as_bytes());
            jsonl.extend_from_slice(br#"","method":"POST","url":""#);
            jsonl.extend_from_slice(CHAT.as_bytes());
            jsonl.extend_from_slice(br#"","body":"#);
            jsonl.extend_from_slice(&p.bytes);
            jsonl.extend_from_slice(b"}\n");
        }
        let (content_type, body) = multipart(&jsonl);
        let api = &self.endpoint;
        let file = api.api(reqwest::Method::POST, "files", Some((&content_type, body)), &self.retry, cancelled).await?;
        let file_id = id_of(&file, "file")?;
        let create = serde_json::json!({"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"});
        let body = Some(("application/json", create.to_string().into_bytes()));
        let created = api.api(reqwest::Method::POST, "batches", body, &self.retry, cancelled).await?;
        let batch_id = id_of(&created, "batch")?;
        if let Some(cache) = &self.cache {
            let keys: Vec<(Key, u32)> = which.iter().map(|&i| (misses[i].key, generation[i])).collect();
            cache.put_pending(&keys, &Pending { batch_id: batch_id.clone(), input_file_id: file_id }).await;
        }
        for &i in which {
            generation[i] += 1;
        }
        Ok(batch_id)
    }

    /// Polls batch `id` until it ends, and returns it as the API last showed it.
    async fn wait(
        &self,
        id: &str,
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<serde_json::Value, CallError> {
        let every = self.endpoint.provider().batch_poll_interval.unwrap_or(DEFAULT_POLL);
        loop {
            let text =
                self.endpoint.api(reqwest::Method::GET, &format!("batches/{id}"), None, &self.retry, cancelled).await?;
            let batch: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CallError::Fatal(format!("the provider's batch {id} is not JSON ({e})")))?;
            match batch["status"].as_str() {
                Some("completed" | "failed" | "expired" | "cancelled") => return Ok(batch),
                Some(_) => {}
                None => return Err(CallError::Fatal(format!("the provider's batch {id} has no `status`"))),
            }
            log::debug!("batch {id}: {}", batch["status"]);
            client::sleep(every, cancelled).await.map_err(|_| CallError::Cancelled)?;
        }
    }

    /// Downloads the output and error files of an ended batch, stores every answer, and
    /// puts each line's outcome in `results` (by its `custom_id`, among `members`).
    async fn collect(
        &self,
        batch: &serde_json::Value,
        misses: &[&Prepared],
        by_id: &HashMap<String, usize>,
        results: &mut [Option<Result<Answer, CallError>>],
        members: &[usize],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Tally, CallError> {
        let mut tally = Tally::default();
        let mut stored = Vec::new();
        for field in ["output_file_id", "error_file_id"] {
            let Some(file) = batch[field].as_str() else { continue };
            let path = format!("files/{file}/content");
            let text = self.endpoint.api(reqwest::Method::GET, &path, None, &self.retry, cancelled).await?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    log::warn!("a line of batch file {file} is not JSON; its request will be asked again");
                    continue;
                };
                let Some(&i) = v["custom_id"].as_str().and_then(|id| by_id.get(id)) else { continue };
                if !members.contains(&i) || results[i].is_some() {
                    continue;
                }
                let response = &v["response"];
                let outcome = match response["status_code"].as_u64() {
                    Some(200) => client::answer_of(&response["body"]).map_err(CallError::Rejected),
                    Some(status) => Err(CallError::Rejected(format!(
                        "the provider refused the request in the batch (HTTP {status}): {}",
                        client::error_text(&response["body"])
                    ))),
                    None => Err(CallError::Rejected(format!(
                        "the batch could not answer the request: {}",
                        v["error"]["message"].as_str().unwrap_or("no reason given")
                    ))),
                };
                match outcome {
                    Ok(answer) => {
                        if let Some(cache) = &self.cache {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            cache.put_then(&misses[i].key, &answer, self.sampling.max_tokens, move || {
                                let _ = tx.send(());
                            });
                            stored.push(rx);
                        }
                        results[i] = Some(Ok(answer));
                    }
                    Err(e) => {
                        tally.failed += 1;
                        results[i] = Some(Err(e));
                    }
                }
            }
        }
        for rx in stored {
            let _ = rx.await;
        }
        Ok(tally)
    }
}

/// The requests `which` of `misses` in parts that each fit in one batch ([`MAX_LINES`],
/// [`MAX_BYTES`]).
fn parts(misses: &[&Prepared], which: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in which {
        // A line is the body and about 150 bytes of framing.
        let line = misses[i].bytes.len() + 150;
        match out.last_mut() {
            Some(part) if part.len() < MAX_LINES && bytes + line <= MAX_BYTES => part.push(i),
            _ => {
                out.push(vec![i]);
                bytes = 0;
            }
        }
        bytes += line;
    }
    out
}

/// The `id` of an object the API answered with (`what`: "file", "batch").
fn id_of(text: &str, what: &str) -> Result<String, CallError> {
    serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v["id"].as_str().map(str::to_owned)).ok_or_else(
        || {
            let start: String = text.chars().take(80).collect();
            CallError::Fatal(format!("the provider's answer names no {what} id: {start:?}"))
        },
    )
}

/// What a failed batch's `errors` say, in a line.
fn batch_errors(batch: &serde_json::Value) -> String {
    let said: Vec<String> = batch["errors"]["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let msg = e["message"].as_str().unwrap_or("no message");
                    match e["line"].as_u64() {
                        Some(l) => format!("line {l}: {msg}"),
                        None => msg.to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if said.is_empty() { "no reason given".to_owned() } else { said.join("; ") }
}

/// A `multipart/form-data` body uploading `jsonl` as a file for a batch: its content type
/// and bytes. The boundary is a hash of the content, so it cannot occur in it by chance.
fn multipart(jsonl: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("weave-{}", &blake3::hash(jsonl).to_hex()[..32]);
    let mut body = Vec::with_capacity(jsonl.len() + 400);
    body.extend_from_slice(
        format!("--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"weave-batch.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(jsonl);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_says_why_line_by_line() {
        let b = serde_json::json!({"errors": {"data": [{"message": "bad model", "line": 3}, {"message": "too big"}]}});
        assert_eq!(batch_errors(&b), "line 3: bad model; too big");
        assert_eq!(batch_errors(&serde_json::json!({})), "no reason given");
    }

    #[test]
    fn the_upload_is_one_file_part_after_the_purpose() {
        let (ct, body) = multipart(b"{\"a\":1}\n");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"")));
        assert!(
            text.contains("filename=\"weave-batch.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n")
        );
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert_eq!(id_of(r#"{"id":"file-1"}"#, "file"), Ok("file-1".into()));
        assert!(matches!(id_of("oops", "batch"), Err(CallError::Fatal(m)) if m.contains("no batch id")));
    }
}
