//! TIFF container walking in plain Rust: how many pages a TIFF has, found from its directory
//! chain without decoding an image (Leptonica decodes the pages themselves).

/// Number of pages (image directories) in a TIFF, counting at most `limit`; 0 when it is not a
/// readable TIFF. Walks the directory chain without decoding any image.
pub fn tiff_page_count(bytes: &[u8], limit: usize) -> usize {
    TiffDirectories::new(bytes).map_or(0, |directories| directories.take(limit).count())
}

/// Classic or big TIFF, either byte order, from the signature.
pub(super) fn is_tiff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") || bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+")
}

/// Offsets of the image directories of a classic or big TIFF, in file order. Stops at the
/// end of the chain, at an offset outside the file, or at a loop.
struct TiffDirectories<'a> {
    bytes: &'a [u8],
    little_endian: bool,
    big_tiff: bool,
    next: u64,
    seen: std::collections::HashSet<u64>,
}

impl<'a> TiffDirectories<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        if !is_tiff(bytes) {
            return None;
        }
        let little_endian = bytes[0] == b'I';
        let big_tiff = bytes[2..4] == [0x2b, 0] || bytes[2..4] == [0, 0x2b];
        let mut directories = TiffDirectories { bytes, little_endian, big_tiff, next: 0, seen: Default::default() };
        directories.next = if big_tiff { directories.read(8, 8)? } else { directories.read(4, 4)? };
        Some(directories)
    }

    /// Unsigned integer of `size` bytes at `offset`, in the file's byte order.
    fn read(&self, offset: u64, size: usize) -> Option<u64> {
        let start = usize::try_from(offset).ok()?;
        let field = self.bytes.get(start..start.checked_add(size)?)?;
        let fold = |value: u64, &byte: &u8| value << 8 | u64::from(byte);
        Some(if self.little_endian { field.iter().rev().fold(0, fold) } else { field.iter().fold(0, fold) })
    }

    /// Offset of the directory after the one at `offset`.
    fn following(&self, offset: u64) -> Option<u64> {
        let (count_size, entry_size, link_size) = if self.big_tiff { (8, 20, 8) } else { (2, 12, 4) };
        let entries = self.read(offset, count_size)?;
        let link = offset.checked_add(count_size as u64)?.checked_add(entries.checked_mul(entry_size)?)?;
        self.read(link, link_size)
    }
}

impl Iterator for TiffDirectories<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let offset = self.next;
        if offset == 0 || !self.seen.insert(offset) {
            return None;
        }
        // An entry count must be readable for the directory to count as a page.
        self.read(offset, if self.big_tiff { 8 } else { 2 })?;
        self.next = self.following(offset).unwrap_or(0);
        Some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiff_directory_walk_survives_garbage() {
        assert_eq!(tiff_page_count(b"II*\0\x08\0\0\0", 10), 0);
        assert_eq!(tiff_page_count(b"not a tiff", 10), 0);
        // One directory with no entries, linking to itself: counted once.
        let looped = b"II*\0\x08\0\0\0\0\0\x08\0\0\0";
        assert_eq!(tiff_page_count(looped, 10), 1);
        // Big-endian, two empty directories.
        let two = b"MM\0*\0\0\0\x08\0\0\0\0\0\x0e\0\0\0\0\0\0";
        assert_eq!(tiff_page_count(two, 10), 2);
        assert_eq!(tiff_page_count(two, 1), 1);
    }
}
