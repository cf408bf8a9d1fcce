//! Bytes of a child document: in memory while small, in a private temporary file once past
//! [`SPILL_AT`]. Archive members, mailbox messages and converter output are written here as they
//! are read, so a tree of large members never sits in memory whole: what a worker holds is the
//! members' file handles, and the caller streams each into the blob store.

use std::borrow::Cow;
use std::io::{BufWriter, Read, Write};

/// Children up to this size stay in memory...
pub const SPILL_AT: usize = 1 << 20;
/// ...while the children of one document kept in memory stay under this: an archive of many
/// small members spills as surely as one of a few large ones.
pub const MEMORY_PER_DOCUMENT: u64 = 64 << 20;

thread_local! {
    /// What the document being extracted on this thread may still keep in memory. An extractor
    /// reads one document at a time on its own thread.
    static MEMORY_LEFT: std::cell::Cell<u64> = const { std::cell::Cell::new(MEMORY_PER_DOCUMENT) };
}

/// Start a document: its children get the whole in-memory allowance again.
pub fn start_document() {
    MEMORY_LEFT.with(|left| left.set(MEMORY_PER_DOCUMENT));
}

/// Whether `len` more bytes may stay in memory; if so, they are counted.
fn keep_in_memory(len: u64) -> bool {
    MEMORY_LEFT.with(|left| {
        let fits = len <= SPILL_AT as u64 && len <= left.get();
        if fits {
            left.set(left.get() - len);
        }
        fits
    })
}

#[derive(Debug)]
pub enum ChildBytes {
    Memory(Vec<u8>),
    /// A temporary file (mode 0600, deleted when dropped) and its length.
    Spilled { file: tempfile::TempPath, len: u64 },
}

impl ChildBytes {
    pub fn len(&self) -> u64 {
        match self {
            ChildBytes::Memory(bytes) => bytes.len() as u64,
            ChildBytes::Spilled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader over the bytes from the start.
    pub fn reader(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            ChildBytes::Memory(bytes) => Box::new(&bytes[..]),
            ChildBytes::Spilled { file, .. } => Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?)),
        })
    }

    /// All the bytes, read into memory if they were spilled: for small children and tests.
    pub fn read(&self) -> std::io::Result<Cow<'_, [u8]>> {
        match self {
            ChildBytes::Memory(bytes) => Ok(Cow::Borrowed(bytes)),
            ChildBytes::Spilled { file, .. } => std::fs::read(file).map(Cow::Owned),
        }
    }

    /// The first `n` bytes (fewer if shorter): enough to sniff the media type.
    pub fn head(&self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut head = Vec::with_capacity(n.min(self.len() as usize));
        self.reader()?.take(n as u64).read_to_end(&mut head)?;
        Ok(head)
    }

    /// The spilled file, if the bytes are in one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ChildBytes::Memory(_) => None,
            ChildBytes::Spilled { file, .. } => Some(file),
        }
    }

    /// A file written by someone else (a converter's output), taken over: moved next to the other
    /// spilled files and deleted when dropped.
    pub fn adopt(path: &std::path::Path) -> std::io::Result<Self> {
        let len = std::fs::metadata(path)?.len();
        if keep_in_memory(len) {
            return std::fs::read(path).map(ChildBytes::Memory);
        }
        let target = tempfile::Builder::new().prefix("docpipe-child-").tempfile()?.into_temp_path();
        std::fs::rename(path, &target)?;
        Ok(ChildBytes::Spilled { file: target, len })
    }
}

impl From<Vec<u8>> for ChildBytes {
    fn from(bytes: Vec<u8>) -> Self {
        ChildBytes::Memory(bytes)
    }
}

/// A writer that keeps bytes in memory up to [`SPILL_AT`], then moves them to a temporary file.
#[derive(Default)]
pub struct Spill {
    memory: Vec<u8>,
    file: Option<(BufWriter<std::fs::File>, tempfile::TempPath)>,
    len: u64,
}

impl Spill {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn finish(mut self) -> std::io::Result<ChildBytes> {
        if self.file.is_none() && !keep_in_memory(self.len) {
            self.spill()?;
        }
        match self.file {
            None => Ok(ChildBytes::Memory(self.memory)),
            Some((writer, path)) => {
                writer.into_inner().map_err(|e| e.into_error())?;
                Ok(ChildBytes::Spilled { file: path, len: self.len })
            }
        }
    }
}

impl Spill {
    /// Move what is in memory to a new temporary file, where the rest will go.
    fn spill(&mut self) -> std::io::Result<()> {
        let (file, path) = tempfile::Builder::new().prefix("docpipe-child-").tempfile()?.into_parts();
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        writer.write_all(&self.memory)?;
        self.memory = Vec::new();
        self.file = Some((writer, path));
        Ok(())
    }
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > SPILL_AT {
            self.spill()?;
        }
        match &mut self.file {
            Some((writer, _)) => writer.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some((writer, _)) => writer.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_goes_to_a_private_file_that_is_removed() {
        let mut small = Spill::default();
        small.write_all(b"abc").unwrap();
        assert!(matches!(small.finish().unwrap(), ChildBytes::Memory(ref b) if b == b"abc"));

        let mut large = Spill::default();
        let chunk = vec![7u8; 300_000];
        for _ in 0..5 {
            large.write_all(&chunk).unwrap();
        }
        let bytes = large.finish().unwrap();
        let path = bytes.path().expect("spilled").to_owned();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0, "private to the user");
        assert_eq!(bytes.len(), 1_500_000);
        assert_eq!(bytes.read().unwrap().len(), 1_500_000);
        assert_eq!(bytes.head(4).unwrap(), vec![7u8; 4]);
        drop(bytes);
        assert!(!path.exists());
    }

    #[test]
    fn many_small_children_spill_once_the_documents_allowance_is_spent() {
        start_document();
        let kept = (0..MEMORY_PER_DOCUMENT / SPILL_AT as u64 + 3)
            .map(|_| {
                let mut child = Spill::default();
                child.write_all(&vec![1u8; SPILL_AT]).unwrap();
                child.finish().unwrap()
            })
            .filter(|c| c.path().is_none())
            .count() as u64;
        assert_eq!(kept, MEMORY_PER_DOCUMENT / SPILL_AT as u64);
        start_document();
        let mut child = Spill::default();
        child.write_all(b"x").unwrap();
        assert!(child.finish().unwrap().path().is_none());
    }
}
