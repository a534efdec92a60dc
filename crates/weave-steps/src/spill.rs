//! Batches a step holds back and lets out later, in the order they came: in memory up to
//! a size, past it in a temporary file, so that what a step holds need not fit in memory.
//! A plain append's synthetic batches, held while the real input runs (`mix`), and a
//! shard's batches, held at a whole-dataset step until the earlier shards' keys are there
//! (`exchange::Held`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use weave_cache::codec;
use weave_core::{Batch, StepError};

/// Bytes of batches kept in memory before the rest go to the file.
const IN_MEMORY: usize = 64 << 20;

/// Batches in the order they came, the older in memory, the newer (once memory is full)
/// in a temporary file, each as a little-endian u64 length and its encoding.
#[derive(Debug)]
pub(crate) struct Queue {
    /// What is held, for messages ("the synthetic records held for after the real ones").
    what: &'static str,
    memory: VecDeque<Batch>,
    bytes: usize,
    limit: usize,
    /// The file (deleted when dropped), where the next frame is written and where the
    /// next one to read starts.
    file: Option<(File, u64, u64)>,
    /// Frames in the file not read yet.
    on_disk: usize,
}

impl Queue {
    /// An empty queue of `what` (for messages: "the synthetic records held for after the
    /// real ones").
    pub(crate) fn new(what: &'static str) -> Queue {
        Queue::with_limit(what, IN_MEMORY)
    }

    pub(crate) fn with_limit(what: &'static str, limit: usize) -> Queue {
        Queue { what, memory: VecDeque::new(), bytes: 0, limit, file: None, on_disk: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.on_disk == 0
    }

    /// Adds a batch after the others.
    pub(crate) fn push(&mut self, batch: Batch) -> Result<(), StepError> {
        let size = batch.memory_size();
        if self.on_disk == 0 && self.bytes + size <= self.limit {
            self.bytes += size;
            self.memory.push_back(batch);
            return Ok(());
        }
        let what = self.what;
        let io = |e| StepError::environment(format!("cannot keep {what} in a temporary file"), e);
        let bytes = codec::encode(&batch).map_err(|e| StepError::internal(format!("{what}: {e}")))?;
        let (file, write_at, _) = match &mut self.file {
            Some(f) => f,
            None => self.file.insert((tempfile::tempfile().map_err(io)?, 0, 0)),
        };
        file.seek(SeekFrom::Start(*write_at)).map_err(io)?;
        file.write_all(&(bytes.len() as u64).to_le_bytes()).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        *write_at += 8 + bytes.len() as u64;
        self.on_disk += 1;
        Ok(())
    }

    /// The oldest batch, if any.
    pub(crate) fn pop(&mut self) -> Result<Option<Batch>, StepError> {
        if let Some(b) = self.memory.pop_front() {
            self.bytes -= b.memory_size();
            return Ok(Some(b));
        }
        if self.on_disk == 0 {
            return Ok(None);
        }
        let what = self.what;
        let io = |e| StepError::environment(format!("cannot keep {what} in a temporary file"), e);
        let Some((file, _, read_at)) = &mut self.file else { return Ok(None) };
        file.seek(SeekFrom::Start(*read_at)).map_err(io)?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let mut bytes = vec![0u8; u64::from_le_bytes(len) as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        *read_at += 8 + bytes.len() as u64;
        self.on_disk -= 1;
        if self.on_disk == 0 {
            // Every frame read: the next ones start a fresh file.
            self.file = None;
        }
        codec::decode(&bytes)
            .map(Some)
            .ok_or_else(|| StepError::internal(format!("{what}: a batch held in a temporary file does not read back")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::Record;

    fn batch(from: i64, n: i64) -> Batch {
        let rows: Vec<Record> =
            (from..from + n).map(|i| Record::new().with("id", i).with("text", format!("t{i}"))).collect();
        Batch::from_records(&rows)
    }

    #[test]
    fn batches_come_back_in_order_from_memory_then_the_file_however_they_interleave() {
        // Room in memory for about two batches: the rest go to the file.
        let limit = batch(0, 10).memory_size() * 2 + 1;
        let mut q = Queue::with_limit("batches", limit);
        let mut want = Vec::new();
        let mut got = Vec::new();
        for k in 0..12 {
            let b = batch(k * 10, 10);
            want.push(b.clone());
            q.push(b).unwrap();
            // Now and then one is taken out while others keep coming.
            if k % 4 == 3 {
                got.push(q.pop().unwrap().unwrap());
            }
        }
        assert!(q.file.is_some(), "past the limit, batches went to the file");
        while let Some(b) = q.pop().unwrap() {
            got.push(b);
        }
        assert!(q.is_empty() && q.file.is_none());
        assert_eq!(got, want);
        // Emptied, it takes batches again, in memory first.
        q.push(batch(500, 3)).unwrap();
        assert_eq!(q.pop().unwrap(), Some(batch(500, 3)));
    }
}
