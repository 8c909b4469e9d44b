//! A look at SQLite's write-ahead log (`zmanager.db-wal`) as the previous
//! process left it, to tell at start-up whether that process closed the
//! journal cleanly and whether SQLite discarded an incomplete write.
//!
//! SQLite recovers the log on its own and says nothing: a transaction whose
//! commit frame did not reach the log whole is ignored, and the committed
//! ones before it are kept. This module only measures what was ignored, so
//! the node can say so in its log. It never writes to the file.
//!
//! The format (<https://www.sqlite.org/fileformat2.html#walformat>): a
//! 32-byte header (magic, version, page size, checkpoint sequence, two
//! salts, a checksum), then frames of a 24-byte header (page number, the
//! database size in pages on a commit frame and 0 otherwise, the two salts,
//! a cumulative checksum) and one page. A log restarted after a checkpoint
//! gets new salts and is overwritten from the start, not truncated, so
//! frames past the valid ones may be stale frames of an earlier generation:
//! those are not an incomplete write, and only frames carrying the current
//! salts are counted as discarded.

use std::io::{Read, Seek, SeekFrom};

/// Bytes in the log's header.
pub(crate) const HEADER_LEN: u64 = 32;
/// Bytes in a frame's header (a frame is this plus one page).
const FRAME_HEADER_LEN: u64 = 24;
/// The log's magic number; the low bit says the checksums are computed on
/// big-endian words.
const MAGIC: u32 = 0x377f_0682;

/// What the log's header says, if it is a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) page_size: u32,
    salts: [u8; 8],
}

impl Header {
    /// Reads the first [`HEADER_LEN`] bytes of a log; `None` if they are not
    /// a valid header (too short, another magic, a page size SQLite cannot
    /// have, or a wrong checksum): SQLite then ignores the whole log.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..32)?;
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
        };
        let magic = word(0)?;
        if magic & !1 != MAGIC {
            return None;
        }
        let page_size = word(8)?;
        if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
            return None;
        }
        let big_endian = magic & 1 == 1;
        let (s0, s1) = checksum(bytes.get(..24)?, big_endian);
        if (Some(s0), Some(s1)) != (word(24), word(28)) {
            return None;
        }
        let mut salts = [0; 8];
        salts.copy_from_slice(bytes.get(16..24)?);
        Some(Self { page_size, salts })
    }

    /// Bytes in one frame: its header and a page.
    pub(crate) fn frame_len(self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.page_size)
    }
}

/// SQLite's log checksum of `data` (a multiple of 8 bytes), from zero.
fn checksum(data: &[u8], big_endian: bool) -> (u32, u32) {
    let word = |b: &[u8]| {
        let b = <[u8; 4]>::try_from(b).unwrap_or_default();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (mut s0, mut s1) = (0u32, 0u32);
    for pair in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// The bytes of `log` (`len` bytes long, with `header`) after its first
/// `kept` frames (those SQLite recovered) that the previous process wrote
/// in the log's current generation: frames of a transaction whose commit
/// never made it, and a frame cut off at the end of the file. Stale frames
/// of an earlier generation are not counted.
pub(crate) fn discarded_after(
    log: &mut (impl Read + Seek),
    len: u64,
    header: Header,
    kept: u64,
) -> std::io::Result<u64> {
    let frame = header.frame_len();
    let valid_end = kept
        .checked_mul(frame)
        .and_then(|b| b.checked_add(HEADER_LEN))
        .unwrap_or(u64::MAX);
    if valid_end >= len {
        return Ok(0);
    }
    let mut at = valid_end;
    let mut written_end = valid_end;
    let mut frame_header = [0u8; FRAME_HEADER_LEN as usize];
    while at < len {
        if len - at < FRAME_HEADER_LEN {
            // A piece of a frame header at the very end: only a write cut
            // off while appending leaves that.
            written_end = len;
            break;
        }
        log.seek(SeekFrom::Start(at))?;
        log.read_exact(&mut frame_header)?;
        if frame_header[8..16] != header.salts {
            break; // a stale frame: this generation's writes end before it
        }
        written_end = (at + frame).min(len);
        at += frame;
    }
    Ok(written_end - valid_end)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A log header with `salts` and a correct checksum (little-endian words).
    fn header_bytes(page_size: u32, salts: [u8; 8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(MAGIC.to_be_bytes());
        h.extend(3_007_000u32.to_be_bytes());
        h.extend(page_size.to_be_bytes());
        h.extend(0u32.to_be_bytes());
        h.extend(salts);
        let (s0, s1) = checksum(&h, false);
        h.extend(s0.to_be_bytes());
        h.extend(s1.to_be_bytes());
        h
    }

    fn frame(page_size: u32, commit: bool, salts: [u8; 8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(1u32.to_be_bytes());
        f.extend(u32::from(commit).to_be_bytes());
        f.extend(salts);
        f.extend([0; 8]);
        f.resize(f.len() + page_size as usize, 7);
        f
    }

    #[test]
    fn a_header_is_checked() {
        let good = header_bytes(4096, [1; 8]);
        let header = Header::parse(&good).unwrap();
        assert_eq!(header.page_size, 4096);
        assert_eq!(header.frame_len(), 4096 + 24);
        assert_eq!(Header::parse(&good[..31]), None, "too short");
        let mut bad = good.clone();
        bad[17] ^= 1;
        assert_eq!(Header::parse(&bad), None, "checksum");
        assert_eq!(Header::parse(&header_bytes(1000, [1; 8])), None);
        assert_eq!(Header::parse(&[0; 32]), None);
    }

    #[test]
    fn only_this_generations_frames_past_the_kept_ones_are_counted() {
        let (page, now, old) = (512, [1; 8], [2; 8]);
        let mut log = header_bytes(page, now);
        log.extend(frame(page, true, now)); // kept
        log.extend(frame(page, false, now)); // written, never committed
        log.extend(frame(page, false, old)); // stale
        log.extend(frame(page, true, old)); // stale
        let len = log.len() as u64;
        let header = Header::parse(&log).unwrap();
        let frame_len = header.frame_len();
        let discarded = discarded_after(&mut Cursor::new(&log), len, header, 1).unwrap();
        assert_eq!(discarded, frame_len);
        assert_eq!(
            discarded_after(&mut Cursor::new(&log), len, header, 2).unwrap(),
            0,
            "all that was written kept"
        );

        // Appending, cut off in the middle of a frame.
        let mut log = header_bytes(page, now);
        log.extend(frame(page, true, now));
        log.extend(&frame(page, true, now)[..100]);
        let len = log.len() as u64;
        assert_eq!(
            discarded_after(&mut Cursor::new(&log), len, header, 1).unwrap(),
            100
        );
        log.truncate(log.len() - 90);
        let len = log.len() as u64;
        assert_eq!(
            discarded_after(&mut Cursor::new(&log), len, header, 1).unwrap(),
            10,
            "a piece of a frame header"
        );
    }
}
