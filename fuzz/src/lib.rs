//! What the fuzz targets share: reading structured input out of the bytes
//! libFuzzer gives. `make_corpus.py` writes seeds in the same layout.

/// Reads fuzz input front to back. Nothing here fails: past the end every
/// read is empty or zero, so any input is some valid layout.
#[derive(Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// One byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// A length-prefixed chunk: a byte below 0x80 is the length; a byte
    /// `0x80 | hi` and the next byte `lo` give the length `hi << 8 | lo`
    /// (up to 32767). Cut short at the end of the input.
    pub fn chunk(&mut self) -> &'a [u8] {
        let first = self.byte();
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            usize::from(first & 0x7f) << 8 | usize::from(self.byte())
        };
        let len = len.min(self.rest.len());
        let (chunk, rest) = self.rest.split_at(len);
        self.rest = rest;
        chunk
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// `text` as a string: lossily, so that non-UTF-8 input still reaches the
/// parsers (the node reads files with `read_to_string`, which refuses such
/// files before they get there, but a replacement character is as good a
/// test as any other).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
