//! The layout of a fuzz input: selector bytes and length-prefixed byte strings from the front,
//! then the rest (a body). Only front-reading calls of `arbitrary::Unstructured` are used, so a
//! seed written by [`Seed`] in the same order reads back as intended.

use arbitrary::Unstructured;

/// Reads a fuzz input front to back; an exhausted input reads as zeros and empty strings.
#[derive(Debug)]
pub struct Input<'a>(Unstructured<'a>);

impl<'a> Input<'a> {
    /// Starts at the front of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(Unstructured::new(data))
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        self.0.bytes(1).map(|b| b[0]).unwrap_or(0)
    }

    /// One of `options`, by the next byte.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[usize::from(self.byte()) % options.len()]
    }

    /// A little-endian `u64` (eight bytes).
    pub fn u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        for b in &mut buf {
            *b = self.byte();
        }
        u64::from_le_bytes(buf)
    }

    /// A byte string of at most 255 bytes (length byte first).
    pub fn short(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.0.len());
        self.0.bytes(n).unwrap_or_default()
    }

    /// [`Input::short`] as text (invalid UTF-8 replaced).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.short()).into_owned()
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.0.take_rest()
    }
}

/// Writes a seed in the layout [`Input`] reads.
#[derive(Debug, Default)]
pub struct Seed(Vec<u8>);

impl Seed {
    /// An empty seed.
    pub fn new() -> Self {
        Seed(Vec::new())
    }

    /// One byte (a selector: the index of the option [`Input::pick`] should choose).
    pub fn byte(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    /// A little-endian `u64`.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// A byte string (cut at 255 bytes).
    pub fn short(mut self, s: &[u8]) -> Self {
        let s = &s[..s.len().min(255)];
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s);
        self
    }

    /// The rest, and the finished seed.
    pub fn rest(mut self, rest: &[u8]) -> Vec<u8> {
        self.0.extend_from_slice(rest);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_reads_back() {
        let seed = Seed::new().byte(3).u64(42).short(b"abc").rest(b"{}");
        let mut input = Input::new(&seed);
        assert_eq!(input.byte(), 3);
        assert_eq!(input.u64(), 42);
        assert_eq!(input.short(), b"abc");
        assert_eq!(input.rest(), b"{}");
    }
}
