//! Shards: one run of a pipeline as one of N processes that split its input between them
//! (`weave run --shard I/N`, a Slurm array task, a Kubernetes indexed job).
//!
//! Sources split their input by [`Shard::owns`]: the input files, in the order the loader
//! reads them, are one stream of bytes, cut into N ranges of nearly equal size; a record
//! belongs to the shard whose range holds its first byte, and a file that cannot be cut
//! (compressed, a JSON array, another character encoding) to the shard whose range holds
//! its first byte. So the shards read every record exactly once, and shard `i`'s records
//! all come before shard `i + 1`'s in the single process's order: the shards' outputs,
//! concatenated in shard order, are the single process's.

use std::fmt;
use std::str::FromStr;

/// The most shards a job may have (five digits in part names).
pub const MAX_SHARDS: u32 = 99_999;

/// Shard `index` of `count` (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard cannot be read from `I/N` or the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShardError(String);

impl Shard {
    /// Shard `index` of `count`; an error unless `index < count <= MAX_SHARDS`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError(format!("the shard count must be 1 to {MAX_SHARDS}, not {count}")));
        }
        if index >= count {
            return Err(ShardError(format!(
                "shard {index} of {count} does not exist: shards are numbered from 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// This shard's number, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards the job has.
    pub fn count(self) -> u32 {
        self.count
    }

    /// `part-IIIII-of-NNNNN`, what `{shard}` in an output's path becomes.
    pub fn part_name(self) -> String {
        format!("part-{:05}-of-{:05}", self.index, self.count)
    }

    /// `part-IIIII-of-NNNNN.failed` in an exchange folder `dir`: the note a shard whose run
    /// failed leaves there (its error), so that the shards waiting for its keys stop and
    /// say why; removed when the shard runs again.
    pub fn failure_note(self, dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(format!("{}.failed", self.part_name()))
    }

    /// `part-IIIII-of-NNNNN.running` in an exchange folder `dir`: the note a shard keeps
    /// there while it runs (its process, and a lease it renews), so that the shards waiting
    /// for its keys can tell a shard that was killed from one that has not started yet.
    pub fn running_note(self, dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(format!("{}.running", self.part_name()))
    }

    /// Where this shard's range of a stream of `total` bytes starts and ends
    /// (`start..end`; the ranges of the N shards are adjacent and cover the stream).
    pub fn range(self, total: u64) -> std::ops::Range<u64> {
        let cut = |i: u32| (u128::from(total) * u128::from(i) / u128::from(self.count)) as u64;
        cut(self.index)..cut(self.index + 1)
    }

    /// Whether a record or a file that cannot be cut, starting at byte `at` of a stream
    /// of `total` bytes, is this shard's. Something that starts at the very end (an empty
    /// file after the last byte) is the last shard's.
    pub fn owns(self, at: u64, total: u64) -> bool {
        let r = self.range(total);
        r.contains(&at) || (at >= total && self.index + 1 == self.count)
    }

    /// The shard from the environment of a job's task, when it has one:
    /// `SLURM_ARRAY_TASK_ID` (from `SLURM_ARRAY_TASK_MIN`, 0 when unset) with
    /// `SLURM_ARRAY_TASK_COUNT`, or Kubernetes' `JOB_COMPLETION_INDEX` with
    /// `WEAVE_SHARD_COUNT` (an indexed job does not tell its completions). `env` reads a
    /// variable (`std::env::var` in the binary; a map in tests).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, ShardError> {
        let number = |name: &str| -> Result<Option<u32>, ShardError> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|_| ShardError(format!("${name} is `{v}`, not a whole number"))),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let Some(count) = number("SLURM_ARRAY_TASK_COUNT")? else {
                return Err(ShardError("$SLURM_ARRAY_TASK_ID is set but $SLURM_ARRAY_TASK_COUNT is not".into()));
            };
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or_else(|| {
                ShardError(format!("$SLURM_ARRAY_TASK_ID ({id}) is below $SLURM_ARRAY_TASK_MIN ({min})"))
            })?;
            return Shard::new(index, count).map(Some).map_err(|e| ShardError(format!("the Slurm array task: {e}")));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let Some(count) = number("WEAVE_SHARD_COUNT")? else {
                return Err(ShardError(
                    "$JOB_COMPLETION_INDEX is set but $WEAVE_SHARD_COUNT is not: set it to the job's completions"
                        .into(),
                ));
            };
            return Shard::new(index, count).map(Some).map_err(|e| ShardError(format!("the indexed job: {e}")));
        }
        Ok(None)
    }

    /// A path written by a sharded run: `{shard}` replaced by [`Shard::part_name`], or,
    /// without it, `-part-IIIII-of-NNNNN` put before the file name's extension (and
    /// before a compression extension: `clean.jsonl.gz` becomes
    /// `clean-part-00001-of-00004.jsonl.gz`), so that the shards' files sit side by side
    /// and a glob reads them in shard order. A run without a shard writes `{shard}` as
    /// shard 0 of 1 and leaves other paths alone.
    pub fn apply(shard: Option<Shard>, path: &str) -> String {
        if path.contains("{shard}") {
            let s = shard.unwrap_or(Shard { index: 0, count: 1 });
            return path.replace("{shard}", &s.part_name());
        }
        let Some(s) = shard else { return path.to_owned() };
        let name_at = path.rfind(['/', '\\']).map_or(0, |i| i + 1);
        let name = &path[name_at..];
        let mut stem_end = name.len();
        for ext in [".gz", ".zst", ".zstd"] {
            if name[..stem_end].to_ascii_lowercase().ends_with(ext) && stem_end > ext.len() {
                stem_end -= ext.len();
                break;
            }
        }
        // The data extension: the last dot of what is left, not a leading one.
        if let Some(dot) = name[..stem_end].rfind('.').filter(|&d| d > 0) {
            stem_end = dot;
        }
        format!("{}{}-{}{}", &path[..name_at], &name[..stem_end], s.part_name(), &name[stem_end..])
    }

    /// [`Shard::apply`] to a path (one whose name is not UTF-8 is left as it is).
    pub fn apply_path(shard: Option<Shard>, path: &std::path::Path) -> std::path::PathBuf {
        match path.to_str() {
            Some(s) => Shard::apply(shard, s).into(),
            None => path.to_path_buf(),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// `I/N`, such as `3/8`.
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError(format!("`{s}` is not a shard: write I/N, such as 0/4 (shards are numbered from 0)"));
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_stream_once_and_every_start_has_one_owner() {
        for count in [1u32, 2, 3, 4, 7, 10] {
            for total in [0u64, 1, 2, 5, 6, 100, 1001] {
                let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
                let mut next = 0;
                for s in &shards {
                    let r = s.range(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
                for at in 0..=total {
                    assert_eq!(shards.iter().filter(|s| s.owns(at, total)).count(), 1, "{at} of {total} in {count}");
                }
            }
        }
    }

    #[test]
    fn parses_i_of_n_and_refuses_what_is_not_a_shard() {
        assert_eq!("2/7".parse::<Shard>().unwrap(), Shard::new(2, 7).unwrap());
        assert_eq!(Shard::new(2, 7).unwrap().to_string(), "2/7");
        for bad in ["7/7", "1/0", "a/2", "3", "-1/2", "1/100000"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!("7/7".parse::<Shard>().unwrap_err().to_string().contains("numbered from 0 to 6"));
    }

    #[test]
    fn the_environment_of_a_slurm_array_task_or_an_indexed_job_gives_the_shard() {
        fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        }
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        let slurm = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert_eq!(Shard::from_env(env(&slurm)).unwrap(), Some(Shard::new(3, 4).unwrap()));
        let from_one = [("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")];
        assert_eq!(Shard::from_env(env(&from_one)).unwrap(), Some(Shard::new(3, 4).unwrap()));
        let k8s = [("JOB_COMPLETION_INDEX", "0"), ("WEAVE_SHARD_COUNT", "2")];
        assert_eq!(Shard::from_env(env(&k8s)).unwrap(), Some(Shard::new(0, 2).unwrap()));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        assert!(Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "2")])).is_err());
    }

    #[test]
    fn paths_get_the_part_name_before_their_extensions() {
        let s = Some(Shard::new(1, 4).unwrap());
        assert_eq!(Shard::apply(s, "out/clean.jsonl"), "out/clean-part-00001-of-00004.jsonl");
        assert_eq!(Shard::apply(s, "out/clean.jsonl.gz"), "out/clean-part-00001-of-00004.jsonl.gz");
        assert_eq!(Shard::apply(s, "out/v1.2/clean"), "out/v1.2/clean-part-00001-of-00004");
        assert_eq!(Shard::apply(s, "out/.hidden"), "out/.hidden-part-00001-of-00004");
        assert_eq!(Shard::apply(s, "out/{shard}/data.csv"), "out/part-00001-of-00004/data.csv");
        assert_eq!(Shard::apply(None, "out/{shard}.csv"), "out/part-00000-of-00001.csv");
        assert_eq!(Shard::apply(None, "out/clean.jsonl"), "out/clean.jsonl");
    }
}
