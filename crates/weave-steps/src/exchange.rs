//! The keys a whole-dataset step exchanges between the shards of a job (see
//! `StepInfo::shards_by_exchange`): `dedup`'s 128-bit keys, `near_dedup`'s signatures,
//! the classes and random keys of the dataset steps (`dataset/shards.rs`).
//!
//! Each shard writes the keys of its input, batch by batch in its order, to
//! `part-IIIII-of-NNNNN.keys` in the step's exchange folder (a temporary file renamed
//! into place when its input has ended, so that a file there is whole). Before it decides
//! on its own records, shard `i` reads the files of shards `0..i` in order and takes their
//! keys into its state, as the single process would have by then. The folder is named by
//! the front end after the step's key over the whole job's input, so a file there is of
//! this data and these settings, whatever run wrote it.
//!
//! A step whose decisions depend on the later shards too (a sample of `n`: the job's `n`
//! smallest keys, `StepInfo::waits_for_every_shard`) takes every shard's file instead
//! ([`Exchange::take_every`]), once its own is in place: run without `--stage`, the
//! shards of such a job must all run at once.
//!
//! A file: `WVX1`, then frames: a little-endian u64 length and that many bytes (one
//! batch's keys, in the step's own encoding).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weave_core::{Batch, Shard, StepContext, StepError};

const MAGIC: &[u8; 4] = b"WVX1";

/// Whether another shard's run has ended without its keys, by the notes it leaves in the
/// exchange folder (see `weave_core::Shard::failure_note` and `running_note`): `failed
/// (its error)`, or `ended without finishing (…)` when its running note's process is
/// gone (killed outright; for a process on another machine, once its lease has run out).
fn ended_without_keys(failed: &Path, running: &Path) -> Option<String> {
    if let Ok(why) = std::fs::read_to_string(failed) {
        let why: String = why.trim().chars().take(2000).collect();
        return Some(format!("failed ({why})"));
    }
    let owner: weave_fs::Owner = serde_json::from_slice(&std::fs::read(running).ok()?).ok()?;
    weave_fs::holder_is_gone(&owner, running)
        .then(|| format!("ended without finishing (its process, {}, is gone: killed, or out of memory?)", owner.pid()))
}

/// How often a shard looks for an earlier shard's keys while it waits.
const POLL: Duration = Duration::from_millis(100);

/// How long a shard waits for an earlier shard's keys before it says so as a warning, and
/// how often it says so again.
const WAIT_WARNING: Duration = Duration::from_secs(60);
const WAIT_WARNING_AGAIN: Duration = Duration::from_secs(600);

/// One shard's side of a step's exchange.
#[derive(Debug)]
pub(crate) struct Exchange {
    dir: PathBuf,
    shard: Shard,
    /// This shard's keys being written, until its input ends.
    out: Option<(BufWriter<File>, weave_fs::TempFile)>,
    /// Whether this shard's file is there already (a resumed or earlier stage's run wrote
    /// it: the folder is content-addressed, so it is the same).
    published: bool,
    /// The run only publishes this shard's keys (a stage before the one that decides with
    /// them, `weave run --stage`): it neither waits for the earlier shards nor decides.
    publish_only: bool,
}

impl Exchange {
    /// The exchange of step `step` for this run, when it is a shard of a job of several
    /// that has one; a fatal error when the run is such a shard and has none (the step was
    /// built without its front end naming the folder).
    pub(crate) fn of(p: &weave_core::Params) -> Result<Option<Exchange>, String> {
        let ctx = p.context();
        let Some(shard) = ctx.shard().filter(|s| s.count() > 1) else { return Ok(None) };
        let id = p.step_id().unwrap_or_default();
        match ctx.exchange(id) {
            Some(dir) => Ok(Some(Exchange {
                dir: dir.to_path_buf(),
                shard,
                out: None,
                published: false,
                publish_only: ctx.publishes_only(id),
            })),
            None => Err(format!(
                "step `{id}` needs the keys of every shard of the job, and this run was given no folder to exchange them in (run it with `weave run --shard`)"
            )),
        }
    }

    /// This shard's index in the job.
    pub(crate) fn shard_index(&self) -> u32 {
        self.shard.index()
    }

    /// The number of shards of the job.
    pub(crate) fn shard_count(&self) -> u32 {
        self.shard.count()
    }

    /// Whether this shard's part is in place already (an earlier run of it published it:
    /// the folder is content-addressed, so it is this run's too), so that a step can spare
    /// itself the work of making frames [`Exchange::publish`] would not write.
    pub(crate) fn own_published(&self) -> bool {
        self.published || self.file_of(self.shard.index()).exists()
    }

    /// Shard `index` of `count` exchanging in `dir`, for other modules' tests.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path, index: u32, count: u32) -> Exchange {
        Exchange {
            dir: dir.to_path_buf(),
            shard: Shard::new(index, count).unwrap_or_else(|e| panic!("no shard {index} of {count}: {e}")),
            out: None,
            published: false,
            publish_only: false,
        }
    }

    /// Whether this run only publishes the shard's keys (see [`Exchange::publish_only`]'s
    /// field): the step then passes nothing on, and its output is not cacheable.
    pub(crate) fn publish_only(&self) -> bool {
        self.publish_only
    }

    /// The step's configuration for its cache key, with the exchange folder's name in it:
    /// a shard's output depends on the earlier shards' input, which the folder's name (a
    /// key over the whole input) covers and the shard's own input key may not.
    pub(crate) fn keyed(&self, config: weave_core::CanonicalConfig) -> weave_core::CanonicalConfig {
        let step: serde_json::Value = serde_json::from_slice(config.as_bytes()).unwrap_or(serde_json::Value::Null);
        let folder = self.dir.file_name().map(|n| n.to_string_lossy().into_owned());
        weave_core::CanonicalConfig::of(&serde_json::json!({ "step": step, "exchange": folder })).unwrap_or(config)
    }

    /// A secret every shard of the job shares for keyed hashes: from the folder's name
    /// (a content key), not its path, which differs on nodes that mount the shared cache
    /// elsewhere.
    pub(crate) fn secret(&self) -> (u64, u64) {
        let name = self.dir.file_name().unwrap_or(self.dir.as_os_str());
        let h = blake3::hash(name.as_encoded_bytes());
        let b = h.as_bytes();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        (word(0), word(8))
    }

    fn file_of(&self, shard: u32) -> PathBuf {
        let s = Shard::new(shard, self.shard.count()).unwrap_or(self.shard);
        self.dir.join(format!("{}.keys", s.part_name()))
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> StepError {
        StepError::environment(format!("cannot {what} the shards' keys in {}", path.display()), e)
    }

    /// Whether every earlier shard's keys are there (then this shard decides as its
    /// records come; otherwise it holds them until they are).
    pub(crate) fn earlier_ready(&self) -> bool {
        (0..self.shard.index()).all(|j| self.file_of(j).exists())
    }

    /// Adds one batch's keys to this shard's file.
    pub(crate) fn publish(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        if self.published {
            return Ok(());
        }
        if self.out.is_none() {
            if self.file_of(self.shard.index()).exists() {
                self.published = true;
                return Ok(());
            }
            std::fs::create_dir_all(&self.dir).map_err(|e| self.io("make the folder of", &self.dir, e))?;
            let (file, temp) = weave_fs::TempFile::new_in(&self.dir).map_err(|e| self.io("write", &self.dir, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(MAGIC).map_err(|e| self.io("write", &self.dir, e))?;
            self.out = Some((w, temp));
        }
        if let Some((w, _)) = &mut self.out {
            let r = w.write_all(&(bytes.len() as u64).to_le_bytes()).and_then(|()| w.write_all(bytes));
            r.map_err(|e| {
                StepError::environment(format!("cannot write the shards' keys in {}", self.dir.display()), e)
            })?;
        }
        Ok(())
    }

    /// Puts this shard's file in place: its input has ended. (A shard with no input
    /// publishes an empty file, so that the later shards do not wait for it.)
    pub(crate) fn finish_publishing(&mut self) -> Result<(), StepError> {
        if self.published {
            return Ok(());
        }
        if self.out.is_none() {
            // No batch came: an empty file, so that the later shards do not wait for it.
            self.publish(&[])?;
            if self.published {
                return Ok(());
            }
        }
        let target = self.file_of(self.shard.index());
        if let Some((w, temp)) = self.out.take() {
            let file = w.into_inner().map_err(|e| self.io("write", &target, e.into_error()))?;
            file.sync_all().map_err(|e| self.io("write", &target, e))?;
            drop(file);
            temp.persist(&target).map_err(|e| self.io("write", &target, e))?;
        }
        self.published = true;
        Ok(())
    }

    /// Whether every shard's part is there, this one's and the later shards' too (a step
    /// that waits for every shard, [`Exchange::take_every`], then decides as its records
    /// come; otherwise it holds them until its own part is out and the others are there).
    pub(crate) fn all_ready(&self) -> bool {
        (0..self.shard.count()).all(|j| self.file_of(j).exists())
    }

    /// Waits until shard `j`'s file is there (or the run is cancelled), saying so in the
    /// log when it waits, and again as a warning when it waits long.
    fn wait_for(&self, j: u32, ctx: &StepContext, said: &mut bool) -> Result<(), StepError> {
        let path = self.file_of(j);
        let since = std::time::Instant::now();
        let mut next_warning = WAIT_WARNING;
        let other = Shard::new(j, self.shard.count()).unwrap_or(self.shard);
        let (note, running) = (other.failure_note(&self.dir), other.running_note(&self.dir));
        while !path.exists() {
            if ctx.is_cancelled() {
                return Err(StepError::fatal("cancelled while waiting for the other shards' keys"));
            }
            // Shard j's run failed, or its process is gone, before its keys were out: they
            // will not come until it runs again, so this shard stops too, rather than wait
            // without end. (No note at all: shard j has not started yet.)
            if let Some(why) = ended_without_keys(&note, &running) {
                return Err(StepError::fatal(format!(
                    "shard {other} of the job {why} before its keys for this step were out; \
                     this shard stops rather than wait for them. Run the failed shards again \
                     (`weave slurm resume JOB`, or `weave run --shard {j}/{n}` then this one)",
                    n = self.shard.count()
                )));
            }
            if !*said {
                log::info!(
                    "shard {}: waiting for shard {j}'s keys ({}) before deciding on its own records",
                    self.shard,
                    path.display()
                );
                *said = true;
            }
            // A long wait is worth seeing without -v: the other shard may have died before
            // its keys were out, and then only its run again ends the wait.
            let waited = since.elapsed();
            if waited >= next_warning {
                log::warn!(
                    "shard {}: still waiting, after {} s, for shard {j}'s keys ({}): is shard {j} of the job running? If it failed, run it again (`weave slurm resume JOB`)",
                    self.shard,
                    waited.as_secs(),
                    path.display()
                );
                next_warning = waited + WAIT_WARNING_AGAIN;
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The mode of a step that waits for every shard ([`StepInfo::waits_for_every_shard`](weave_core::StepInfo::waits_for_every_shard)):
    /// waits until every shard's part is there, this one's included (it must have been put
    /// in place first, [`Exchange::finish_publishing`], or the shards would wait for one
    /// another forever), then hands each batch's bytes to `take` with the shard that
    /// published them, shard by shard in order.
    pub(crate) fn take_every(
        &self,
        ctx: &StepContext,
        mut take: impl FnMut(u32, &[u8]) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        if !self.file_of(self.shard.index()).exists() {
            return Err(StepError::internal(format!(
                "shard {} waits for every shard's keys before it put its own in place",
                self.shard
            )));
        }
        let mut said = false;
        for j in 0..self.shard.count() {
            self.wait_for(j, ctx, &mut said)?;
        }
        for j in 0..self.shard.count() {
            self.read(j, &mut |bytes: &[u8]| take(j, bytes))?;
        }
        Ok(())
    }

    /// Waits until every earlier shard's keys are there (or the run is cancelled); returns
    /// how many bytes of keys they hold together (so that a set of them can be made its
    /// size at once rather than grown).
    pub(crate) fn wait_for_earlier(&self, ctx: &StepContext) -> Result<u64, StepError> {
        let mut said = false;
        for j in 0..self.shard.index() {
            self.wait_for(j, ctx, &mut said)?;
        }
        Ok((0..self.shard.index()).filter_map(|j| std::fs::metadata(self.file_of(j)).ok()).map(|m| m.len()).sum())
    }

    /// Waits for every earlier shard's keys ([`Exchange::wait_for_earlier`]), then hands
    /// each batch's keys to `take`, shard by shard in order.
    pub(crate) fn take_earlier(
        &self,
        ctx: &StepContext,
        mut take: impl FnMut(&[u8]) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        self.take_earlier_each(ctx, |_, bytes| take(bytes))
    }

    /// [`Exchange::take_earlier`], handing `take` the shard each batch's keys are of too
    /// (for a step whose shards number something in their own order, such as classes).
    pub(crate) fn take_earlier_each(
        &self,
        ctx: &StepContext,
        mut take: impl FnMut(u32, &[u8]) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        self.wait_for_earlier(ctx)?;
        for j in 0..self.shard.index() {
            self.read(j, &mut |bytes: &[u8]| take(j, bytes))?;
        }
        Ok(())
    }

    /// Hands each batch's keys of this shard's own file to `take`, when a run before this
    /// one published it (a stage that only published its keys, an earlier attempt):
    /// `false` when it is not there.
    pub(crate) fn take_own(&self, mut take: impl FnMut(&[u8]) -> Result<(), StepError>) -> Result<bool, StepError> {
        if !self.file_of(self.shard.index()).exists() {
            return Ok(false);
        }
        self.read(self.shard.index(), &mut take)?;
        Ok(true)
    }

    /// The error for shard `j`'s file when what it holds cannot be read (`why`), naming
    /// the file.
    pub(crate) fn damaged(&self, j: u32, why: &str) -> StepError {
        StepError::fatal(format!("{} is damaged: {why}", self.file_of(j).display()))
    }

    /// Reads shard `j`'s file, handing each batch's keys to `take`.
    fn read(&self, j: u32, take: &mut impl FnMut(&[u8]) -> Result<(), StepError>) -> Result<(), StepError> {
        let path = self.file_of(j);
        let file = File::open(&path).map_err(|e| self.io("read", &path, e))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic).map_err(|e| self.io("read", &path, e))?;
        if &magic != MAGIC {
            return Err(StepError::fatal(format!("{} is not a file of the shards' keys", path.display())));
        }
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 8];
            match r.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(self.io("read", &path, e)),
            }
            let n = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
            buf.clear();
            buf.try_reserve(n).map_err(|_| StepError::fatal(format!("{} is damaged", path.display())))?;
            r.by_ref().take(n as u64).read_to_end(&mut buf).map_err(|e| self.io("read", &path, e))?;
            if buf.len() != n {
                return Err(StepError::fatal(format!("{} is cut short", path.display())));
            }
            if n > 0 {
                take(&buf)?;
            }
        }
        Ok(())
    }
}

/// What a sharded whole-dataset step holds while it waits for the earlier shards: its own
/// batches, with their keys, to decide on once it has taken the earlier shards' in.
/// A shard's batches held at a whole-dataset step until the earlier shards' keys are there,
/// each with what the step made of it (its keys): the keys in memory (a few bytes a
/// record), the batches in order in a [`Queue`](crate::spill::Queue), 64 MiB in memory
/// and the rest in a temporary file, so that a shard started before the earlier ones
/// need not hold its share of the data in memory. Let out a batch at a time
/// (`StatefulTransform::more`).
#[derive(Debug)]
pub(crate) struct Held<K> {
    batches: crate::spill::Queue,
    keys: std::collections::VecDeque<K>,
}

impl<K> Default for Held<K> {
    fn default() -> Self {
        Held {
            batches: crate::spill::Queue::new("a shard's records held until the earlier shards' keys are there"),
            keys: std::collections::VecDeque::new(),
        }
    }
}

impl<K> Held<K> {
    /// Holds `batch`, after the others, with its keys.
    pub(crate) fn push(&mut self, batch: Batch, keys: K) -> Result<(), StepError> {
        self.batches.push(batch)?;
        self.keys.push_back(keys);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys of the batches held, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.iter()
    }

    /// The oldest batch held, with its keys.
    pub(crate) fn pop(&mut self) -> Result<Option<(Batch, K)>, StepError> {
        let Some(keys) = self.keys.pop_front() else { return Ok(None) };
        match self.batches.pop()? {
            Some(batch) => Ok(Some((batch, keys))),
            None => Err(StepError::internal("a held batch is missing")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn exchange(dir: &Path, index: u32, count: u32) -> Exchange {
        Exchange {
            dir: dir.to_path_buf(),
            shard: Shard::new(index, count).unwrap(),
            out: None,
            published: false,
            publish_only: false,
        }
    }

    #[test]
    fn the_earlier_shards_keys_come_back_in_shard_order_batch_by_batch() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("x-of-3");
        let mut zero = exchange(&folder, 0, 3);
        zero.publish(b"a1").unwrap();
        zero.publish(b"a22").unwrap();
        let mut one = exchange(&folder, 1, 3);
        assert!(!one.earlier_ready(), "shard 0's file is not there until its input ends");
        zero.finish_publishing().unwrap();
        assert!(one.earlier_ready());
        // A shard with no input publishes an empty file.
        one.finish_publishing().unwrap();
        let two = exchange(&folder, 2, 3);
        let ctx = StepContext::new("s", 0, 0, Arc::default());
        let mut got = Vec::new();
        two.take_earlier(&ctx, |b| {
            got.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [b"a1".to_vec(), b"a22".to_vec()]);
        // Published again (a resumed run): the file in place is kept.
        let mut again = exchange(&folder, 0, 3);
        again.publish(b"other").unwrap();
        again.finish_publishing().unwrap();
        let mut got = Vec::new();
        two.take_earlier(&ctx, |b| {
            got.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn the_secret_is_the_same_wherever_the_shared_cache_is_mounted() {
        let a = exchange(Path::new("/mnt/a/.weave/cache/exchange/k1-of-4"), 0, 4);
        let b = exchange(Path::new("/shared/cache/exchange/k1-of-4"), 3, 4);
        let other = exchange(Path::new("/mnt/a/.weave/cache/exchange/k2-of-4"), 0, 4);
        assert_eq!(a.secret(), b.secret());
        assert_ne!(a.secret(), other.secret());
    }

    #[test]
    fn a_cancelled_run_stops_waiting_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("y-of-2");
        let one = exchange(&folder, 1, 2);
        let ctx = StepContext::new("s", 0, 0, Arc::new(AtomicBool::new(true)));
        let err = one.take_earlier(&ctx, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("part-00000-of-00002.keys"), b"WVX1\x09\x00\x00\x00\x00\x00\x00\x00ab").unwrap();
        let ctx = StepContext::new("s", 0, 0, Arc::default());
        let err = one.take_earlier(&ctx, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        std::fs::write(folder.join("part-00000-of-00002.keys"), b"nope").unwrap();
        let err = one.take_earlier(&ctx, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("not a file of the shards' keys"), "{err}");
    }

    #[test]
    fn a_shard_that_failed_before_its_keys_were_out_stops_those_waiting_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("z-of-3");
        std::fs::create_dir_all(&folder).unwrap();
        let ctx = StepContext::new("s", 0, 0, Arc::default());
        // Shard 0 is out; shard 1 failed: shard 2 stops at shard 1, naming it and its error.
        let mut zero = exchange(&folder, 0, 3);
        zero.finish_publishing().unwrap();
        let note = Shard::new(1, 3).unwrap().failure_note(&folder);
        std::fs::write(&note, "step \"load\" failed: line 7: not JSON\n").unwrap();
        let two = exchange(&folder, 2, 3);
        let err = two.take_earlier(&ctx, |_| Ok(())).unwrap_err().to_string();
        assert!(
            err.contains("shard 1/3 of the job failed (step \"load\" failed: line 7: not JSON) before its keys for this step were out"),
            "{err}"
        );
        assert!(err.contains("weave run --shard 1/3"), "{err}");
        // A step that waits for every shard, its own part out, stops the same way.
        let mut two = two;
        two.finish_publishing().unwrap();
        assert!(every(&two, &ctx).unwrap_err().to_string().contains("shard 1/3 of the job failed"));
        // Its keys there (it ran again), a note left behind does not stop anyone.
        let mut one = exchange(&folder, 1, 3);
        one.finish_publishing().unwrap();
        two.take_earlier(&ctx, |_| Ok(())).unwrap();
    }

    #[test]
    fn a_shard_whose_process_is_gone_has_ended_without_its_keys_one_not_started_has_not() {
        let dir = tempfile::tempdir().unwrap();
        let (failed, running) = (dir.path().join("p.failed"), dir.path().join("p.running"));
        let note = |owner: weave_fs::Owner| std::fs::write(&running, serde_json::to_vec(&owner).unwrap()).unwrap();
        // No note: not started yet.
        assert_eq!(ended_without_keys(&failed, &running), None);
        // Running, here.
        note(weave_fs::Owner::current());
        assert_eq!(ended_without_keys(&failed, &running), None);
        // Its process is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        note(weave_fs::Owner::in_space(pid, Some(1), weave_fs::pid_space()));
        let why = ended_without_keys(&failed, &running).expect("gone");
        assert!(why.starts_with(&format!("ended without finishing (its process, {pid}, is gone")), "{why}");
        // On another machine: alive while its lease is renewed, gone once it has run out.
        note(weave_fs::Owner::in_space(pid, Some(1), Some(0x1234)));
        assert_eq!(ended_without_keys(&failed, &running), None);
        let old = std::time::SystemTime::now() - weave_fs::LEASE_EXPIRY - std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&running).unwrap().set_modified(old).unwrap();
        assert!(ended_without_keys(&failed, &running).is_some());
        // A damaged note says nothing; a failure note says the error.
        std::fs::write(&running, b"{").unwrap();
        assert_eq!(ended_without_keys(&failed, &running), None);
        std::fs::write(&failed, "disk full\n").unwrap();
        assert_eq!(ended_without_keys(&failed, &running).as_deref(), Some("failed (disk full)"));
    }

    /// Collects what `x` takes from every shard, as (shard, bytes).
    fn every(x: &Exchange, ctx: &StepContext) -> Result<Vec<(u32, Vec<u8>)>, StepError> {
        let mut got = Vec::new();
        x.take_every(ctx, |j, b| {
            got.push((j, b.to_vec()));
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn waiting_for_every_shard_takes_the_later_shards_too_once_they_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("w-of-3");
        let ctx = StepContext::new("s", 0, 0, Arc::default());
        let mut one = exchange(&folder, 1, 3);
        one.publish(b"b1").unwrap();
        // Waiting before its own part is out would wait forever: refused.
        let err = every(&one, &ctx).unwrap_err();
        assert!(err.to_string().contains("before it put its own in place"), "{err}");
        one.finish_publishing().unwrap();
        assert!(!one.all_ready(), "shards 0 and 2 are not there");
        // Shard 1 waits for the later shard 2 as well as the earlier shard 0, which come
        // while it waits.
        let waiter = std::thread::spawn({
            let folder = folder.clone();
            move || {
                let one = exchange(&folder, 1, 3);
                every(&one, &StepContext::new("s", 0, 0, Arc::default())).unwrap()
            }
        });
        std::thread::sleep(Duration::from_millis(250));
        let mut two = exchange(&folder, 2, 3);
        two.publish(b"c1").unwrap();
        two.publish(b"c2").unwrap();
        two.finish_publishing().unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert!(!waiter.is_finished(), "shard 0 is still missing");
        // Shard 0 has no input: an empty part.
        exchange(&folder, 0, 3).finish_publishing().unwrap();
        let got = waiter.join().unwrap();
        assert_eq!(got, [(1, b"b1".to_vec()), (2, b"c1".to_vec()), (2, b"c2".to_vec())]);
        assert!(one.all_ready());
        // The earlier shards alone, each batch with its shard.
        let mut earlier = Vec::new();
        two.take_earlier_each(&ctx, |j, b| {
            earlier.push((j, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(earlier, [(1, b"b1".to_vec())]);
    }

    #[test]
    fn waiting_for_every_shard_stops_when_cancelled_and_names_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("z-of-2");
        let mut zero = exchange(&folder, 0, 2);
        zero.publish(b"a").unwrap();
        zero.finish_publishing().unwrap();
        // Shard 1 never comes; the run is cancelled.
        let cancelled = StepContext::new("s", 0, 0, Arc::new(AtomicBool::new(true)));
        let err = every(&zero, &cancelled).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        let later = folder.join("part-00001-of-00002.keys");
        std::fs::write(&later, b"WVX1\x05\x00\x00\x00\x00\x00\x00\x00ab").unwrap();
        let ctx = StepContext::new("s", 0, 0, Arc::default());
        let err = every(&zero, &ctx).unwrap_err();
        assert!(err.to_string().contains("cut short") && err.to_string().contains(&*later.to_string_lossy()), "{err}");
        std::fs::write(&later, b"WVX2").unwrap();
        let err = every(&zero, &ctx).unwrap_err();
        assert!(err.to_string().contains("part-00001-of-00002.keys is not a file of the shards' keys"), "{err}");
        // A frame a step cannot read is named with its file.
        let err = zero.damaged(1, "a frame ends early");
        assert_eq!(err.to_string(), format!("{} is damaged: a frame ends early", later.display()));
    }
}
