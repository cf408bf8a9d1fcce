//! A document to extract: bytes already in memory, or the file that holds them. A worker hands
//! over documents larger than `extract.max_in_memory_bytes` as files, and they stay there: the
//! formats that can be read from a file (PDF, archives, mailboxes, plain text) are, and the rest
//! are refused whole rather than loaded whole, so what one document costs in memory has a bound
//! whatever its size.

use std::borrow::Cow;
use std::io::{Cursor, Read, Seek};
use std::path::Path;

use super::process::TempFile;
use super::{ExtractError, ExtractErrorKind};

/// Enough of the start of a document to sniff its type (`sniff` looks at no more).
pub const SNIFF_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Bytes(&'a [u8]),
    /// A file nobody else writes to while it is read (a worker's private copy of the document).
    File { path: &'a Path, len: u64 },
}

/// What the ZIP reader needs: its central directory is at the end.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

impl<'a> Input<'a> {
    pub fn file(path: &'a Path) -> std::io::Result<Self> {
        let len = std::fs::metadata(path)?.len();
        Ok(Input::File { path, len })
    }

    pub fn len(&self) -> u64 {
        match self {
            Input::Bytes(bytes) => bytes.len() as u64,
            Input::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` bytes (all of them when shorter).
    pub fn head(&self, n: usize) -> Result<Cow<'a, [u8]>, ExtractError> {
        match self {
            Input::Bytes(bytes) => Ok(Cow::Borrowed(&bytes[..bytes.len().min(n)])),
            Input::File { len, .. } => {
                let mut head = Vec::with_capacity(n.min(*len as usize));
                self.open()?.take(n as u64).read_to_end(&mut head).map_err(unreadable)?;
                Ok(Cow::Owned(head))
            }
        }
    }

    /// A reader from the start.
    pub(super) fn open(&self) -> Result<Box<dyn ReadSeek + 'a>, ExtractError> {
        Ok(match *self {
            Input::Bytes(bytes) => Box::new(Cursor::new(bytes)),
            // A small buffer: the ZIP reader seeks to every member (twice), and each seek empties it.
            Input::File { path, .. } => Box::new(std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(path).map_err(unreadable)?)),
        })
    }

    /// All the bytes, for formats that are parsed whole; a file over `limit` bytes is refused.
    pub(super) fn whole(&self, limit: u64, media: &str) -> Result<Cow<'a, [u8]>, ExtractError> {
        match *self {
            Input::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            Input::File { len, .. } if len > limit => Err(ExtractError::new(
                ExtractErrorKind::TooLarge,
                format!("{media} is read whole and this one is {len} bytes, over extract.max_in_memory_bytes ({limit}): not read"),
            )),
            Input::File { path, .. } => std::fs::read(path).map(Cow::Owned).map_err(unreadable),
        }
    }

    /// A path a converter can open, the file itself or a private temporary copy of the bytes,
    /// with a private directory beside it for the converter's output.
    pub(super) fn on_disk(&self, name: &str) -> Result<OnDisk<'a>, ExtractError> {
        match *self {
            Input::Bytes(bytes) => Ok(OnDisk { given: None, scratch: TempFile::new(bytes, name)? }),
            Input::File { path, .. } => Ok(OnDisk { given: Some(path), scratch: TempFile::scratch()? }),
        }
    }
}

/// See [`Input::on_disk`]; the directory (and a copy in it) goes when this is dropped.
pub(super) struct OnDisk<'a> {
    given: Option<&'a Path>,
    scratch: TempFile,
}

impl OnDisk<'_> {
    pub fn path(&self) -> &Path {
        self.given.unwrap_or(&self.scratch.path)
    }

    /// Private to this process's user, empty but for the copy.
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }
}

// The worker's own copy failing to read is this machine's trouble, but extraction has no kind for
// that: it is reported like other unreadable input, with the reason.
fn unreadable(e: std::io::Error) -> ExtractError {
    ExtractError::new(ExtractErrorKind::Corrupt, format!("reading the document's file: {e}"))
}
