//! The compressed sample chunk: a run of `(timestamp ms, f64)` samples of one series,
//! encoded as a bit stream the way Facebook's Gorilla paper and Prometheus'
//! `tsdb/chunkenc/xor.go` do, appendable sample by sample and iterable in order.
//!
//! This module owns the chunk's encoding, its byte form for disk, and the encoder state
//! that lets appends continue in O(1) (also after [`Chunk::from_bytes`]).
//!
//! # Encoding
//!
//! The byte form is a 5-byte header (a format tag, `1`, then the sample count as a
//! big-endian `u32`) followed by the bit stream, written most significant bit first and
//! padded with zero bits to a whole byte. The bit stream is the one of Prometheus' XOR
//! chunk:
//!
//! - first sample: the timestamp as a zigzag varint, the value as its 64 raw bits;
//! - second sample: the timestamp delta as a uvarint, the value XOR-encoded;
//! - later samples: the delta of the delta (`dod`), then the value XOR-encoded.
//!
//! A `dod` of `0` is written `0`; one in `[-8191, 8192]` as `10` and 14 bits; in
//! `[-65535, 65536]` as `110` and 17 bits; in `[-524287, 524288]` as `1110` and 20 bits;
//! any other as `1111` and 64 bits (the low bits of its two's complement).
//!
//! A value is XORed with the previous one's bit pattern: `0` → `0`; otherwise `1` and
//! either `0` + the meaningful bits in the previous window of leading/trailing zeros (when
//! they fit in it), or `1` + 5 bits of leading zeros (capped at 31) + 6 bits of the number
//! of meaningful bits (64 written as 0) + those bits. Values are handled as bit patterns,
//! so every NaN (the stale marker `0x7ff0_0000_0000_0002` included) and `-0.0` come back
//! bit for bit.

use std::iter::FusedIterator;

/// Bytes before the bit stream: the format tag, then the sample count.
const HEADER_LEN: usize = 5;

/// The format tag of this encoding (XOR values, delta-of-delta timestamps).
const FORMAT_XOR: u8 = 1;

/// The sample count and the bit stream of bytes written by [`Chunk::bytes`]; None if the
/// header is not this format's.
fn split_header(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (header, data) = bytes.split_at_checked(HEADER_LEN)?;
    let &[tag, c0, c1, c2, c3] = header else {
        return None;
    };
    (tag == FORMAT_XOR).then_some((u32::from_be_bytes([c0, c1, c2, c3]), data))
}

/// An appendable chunk of (timestamp ms, f64) samples, timestamps strictly increasing.
///
/// It holds the bit stream, the sample count and the encoder state needed to append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The bit stream (without the header).
    stream: BitWriter,
    /// How many samples the stream holds.
    count: u32,
    /// The first sample's timestamp (meaningless while empty).
    first_t: i64,
    /// The state after the last sample: what the next one is encoded against.
    state: State,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a chunk from bytes written by [`Chunk::bytes`] (validates the header; returns None if corrupt).
    ///
    /// The whole stream is decoded, so that the encoder state is restored and appends can
    /// continue. Bytes are refused when the header is not this format's, when the stream
    /// does not hold the counted samples, when timestamps do not increase, or when
    /// anything (other than zero padding) follows the last sample.
    pub fn from_bytes(bytes: &[u8]) -> Option<Chunk> {
        let (count, data) = split_header(bytes)?;

        let mut reader = BitReader::new(data);
        let mut state = State::default();
        let mut first_t = 0;
        for index in 0..count {
            let (t, _) = read_sample(&mut reader, &mut state, index)?;
            if index == 0 {
                first_t = t;
            }
        }

        // Only the zero padding of the last byte may follow the last sample.
        let bit_len = reader.pos;
        if data.len() != bit_len.div_ceil(8) {
            return None;
        }
        let padding = (8 - bit_len % 8) % 8;
        if reader.read_bits(padding as u32)? != 0 {
            return None;
        }

        Some(Chunk {
            stream: BitWriter {
                bytes: data.to_vec(),
                bit_len,
            },
            count,
            first_t,
            state,
        })
    }

    /// Decodes the samples of bytes written by [`Chunk::bytes`] onto `out`, straight from
    /// the bytes (what a query needs of a chunk on disk: no appendable chunk rebuilt, so
    /// the stream is decoded once). None, with `out` as it was, if they are corrupt.
    pub fn decode_into(bytes: &[u8], out: &mut Vec<(i64, f64)>) -> Option<()> {
        let (count, data) = split_header(bytes)?;
        let before = out.len();
        out.reserve(count as usize);
        let mut reader = BitReader::new(data);
        let mut state = State::default();
        for index in 0..count {
            match read_sample(&mut reader, &mut state, index) {
                Some((t, v)) => out.push((t, f64::from_bits(v))),
                None => {
                    out.truncate(before);
                    return None;
                }
            }
        }
        Some(())
    }

    /// Appends a sample. Returns false (and changes nothing) if `t` is not greater than the last timestamp.
    ///
    /// Also returns false, changing nothing, when the chunk already holds `u32::MAX`
    /// samples (the most its header can count).
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        if self.count == u32::MAX || (self.count > 0 && t <= self.state.t) {
            return false;
        }
        let v = v.to_bits();
        let w = &mut self.stream;
        match self.count {
            0 => {
                w.write_varint(t);
                w.write_bits(v, 64);
                self.first_t = t;
            }
            1 => {
                // `t > last`, so the true delta is in `1..2^64` and fits a `u64` exactly.
                let delta = t.wrapping_sub(self.state.t) as u64;
                w.write_uvarint(delta);
                write_value(w, &mut self.state.window, self.state.v, v);
                self.state.delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.state.t) as u64;
                let dod = delta.wrapping_sub(self.state.delta) as i64;
                write_dod(w, dod);
                write_value(w, &mut self.state.window, self.state.v, v);
                self.state.delta = delta;
            }
        }
        self.state.t = t;
        self.state.v = v;
        self.count += 1;
        true
    }

    /// How many samples the chunk holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk holds no sample.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first timestamp, if any sample.
    pub fn min_time(&self) -> Option<i64> {
        (self.count > 0).then_some(self.first_t)
    }

    /// The last timestamp, if any sample.
    pub fn max_time(&self) -> Option<i64> {
        (self.count > 0).then_some(self.state.t)
    }

    /// The encoded bytes (a small header with the sample count, then the bit stream), for writing to disk.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_XOR);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.stream.bytes);
        out
    }

    /// Size of the encoded form in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.stream.bytes.len()
    }

    /// The samples in order.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter {
            reader: BitReader::new(&self.stream.bytes),
            state: State::default(),
            index: 0,
            count: self.count,
        }
    }
}

impl<'a> IntoIterator for &'a Chunk {
    type Item = (i64, f64);
    type IntoIter = ChunkIter<'a>;

    fn into_iter(self) -> ChunkIter<'a> {
        self.iter()
    }
}

/// The samples of a [`Chunk`], oldest first, as `(timestamp ms, value)`.
///
/// Should the stream turn out corrupt (which a chunk built by appends or accepted by
/// [`Chunk::from_bytes`] never is), iteration stops there.
#[derive(Clone, Debug)]
pub struct ChunkIter<'a> {
    reader: BitReader<'a>,
    state: State,
    /// The index of the next sample.
    index: u32,
    count: u32,
}

impl Iterator for ChunkIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.index >= self.count {
            return None;
        }
        match read_sample(&mut self.reader, &mut self.state, self.index) {
            Some((t, v)) => {
                self.index += 1;
                Some((t, f64::from_bits(v)))
            }
            None => {
                self.index = self.count;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.index) as usize;
        (left, Some(left))
    }
}

impl FusedIterator for ChunkIter<'_> {}

/// The state after a sample, shared by encoder and decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    /// The sample's timestamp.
    t: i64,
    /// Its timestamp minus the previous one's (0 after the first sample).
    delta: u64,
    /// The bit pattern of its value.
    v: u64,
    /// The window of the last XOR written with an explicit window; None until one is.
    window: Option<Window>,
}

/// Leading and trailing zero bits framing the meaningful bits of an XOR.
/// `leading <= 31` and `leading + trailing <= 63`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    leading: u32,
    trailing: u32,
}

impl Window {
    fn meaningful(self) -> u32 {
        64 - self.leading - self.trailing
    }
}

/// Whether `x` is in the `dod` bucket of `bits` bits: `[-(2^(bits-1) - 1), 2^(bits-1)]`.
fn in_bucket(x: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    -(half - 1) <= x && x <= half
}

fn write_dod(w: &mut BitWriter, dod: i64) {
    let (prefix, prefix_len, size) = if dod == 0 {
        w.write_bit(false);
        return;
    } else if in_bucket(dod, 14) {
        (0b10, 2, 14)
    } else if in_bucket(dod, 17) {
        (0b110, 3, 17)
    } else if in_bucket(dod, 20) {
        (0b1110, 4, 20)
    } else {
        (0b1111, 4, 64)
    };
    w.write_bits(prefix, prefix_len);
    w.write_bits(dod as u64, size);
}

fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    let mut ones = 0;
    while ones < 4 && r.read_bit()? {
        ones += 1;
    }
    let size = match ones {
        0 => return Some(0),
        1 => 14,
        2 => 17,
        3 => 20,
        _ => return r.read_bits(64).map(|bits| bits as i64),
    };
    let mut dod = r.read_bits(size)? as i64;
    // The buckets are asymmetric: `2^(size-1)` itself is positive.
    if dod > 1 << (size - 1) {
        dod -= 1 << size;
    }
    Some(dod)
}

fn write_value(w: &mut BitWriter, window: &mut Option<Window>, prev: u64, v: u64) {
    let xor = prev ^ v;
    if xor == 0 {
        w.write_bit(false);
        return;
    }
    w.write_bit(true);
    // Capped so it fits 5 bits; a few leading zeros then count as meaningful.
    let leading = xor.leading_zeros().min(31);
    let trailing = xor.trailing_zeros();
    if let Some(old) = *window
        && leading >= old.leading
        && trailing >= old.trailing
    {
        w.write_bit(false);
        w.write_bits(xor >> old.trailing, old.meaningful());
        return;
    }
    let new = Window { leading, trailing };
    *window = Some(new);
    let meaningful = new.meaningful();
    w.write_bit(true);
    w.write_bits(u64::from(leading), 5);
    // 1..=64 meaningful bits; 64 does not fit 6 bits and is written as 0.
    w.write_bits(u64::from(meaningful % 64), 6);
    w.write_bits(xor >> trailing, meaningful);
}

fn read_value(r: &mut BitReader<'_>, window: &mut Option<Window>, prev: u64) -> Option<u64> {
    if !r.read_bit()? {
        return Some(prev);
    }
    let win = if r.read_bit()? {
        let leading = r.read_bits(5)? as u32;
        let meaningful = match r.read_bits(6)? as u32 {
            0 => 64,
            n => n,
        };
        let trailing = 64u32.checked_sub(leading + meaningful)?;
        Window { leading, trailing }
    } else {
        (*window)?
    };
    let xor = r.read_bits(win.meaningful())? << win.trailing;
    *window = Some(win);
    Some(prev ^ xor)
}

/// Decodes sample number `index` against `state`, the state after the one before it, and
/// advances `state`. None (with `state` untouched) if the stream is corrupt or ends.
fn read_sample(r: &mut BitReader<'_>, state: &mut State, index: u32) -> Option<(i64, u64)> {
    let mut next = *state;
    if index == 0 {
        next.t = r.read_varint()?;
        next.v = r.read_bits(64)?;
    } else {
        let delta = if index == 1 {
            r.read_uvarint()?
        } else {
            state.delta.wrapping_add(read_dod(r)? as u64)
        };
        // Wrapping arithmetic mirrors the encoder's; a valid delta never wraps past `t`.
        next.t = state.t.wrapping_add(delta as i64);
        if next.t <= state.t {
            return None;
        }
        next.delta = delta;
        next.v = read_value(r, &mut next.window, state.v)?;
    }
    *state = next;
    Some((next.t, next.v))
}

/// An append-only bit stream, most significant bit of each byte first.
/// `bytes.len() == bit_len.div_ceil(8)`, and the unused low bits of the last byte are 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct BitWriter {
    bytes: Vec<u8>,
    bit_len: usize,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` (at most 64) bits of `value`, most significant first.
    fn write_bits(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            let used = (self.bit_len % 8) as u32;
            if used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - used;
            let take = free.min(left);
            let bits = (value >> (left - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bytes.last_mut() {
                *last |= (bits << (free - take)) as u8;
            }
            self.bit_len += take as usize;
            left -= take;
        }
    }

    /// Go's `binary.PutUvarint`: 7 bits a byte, low first, the top bit saying more follow.
    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.write_bits((x & 0x7f) | 0x80, 8);
            x >>= 7;
        }
        self.write_bits(x, 8);
    }

    /// Go's `binary.PutVarint`: zigzag, then a uvarint.
    fn write_varint(&mut self, x: i64) {
        self.write_uvarint(((x << 1) ^ (x >> 63)) as u64);
    }
}

/// Reads a bit stream written by [`BitWriter`]; every read fails past the end.
#[derive(Clone, Debug)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next bit to read.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|b| b == 1)
    }

    /// Reads `n` (at most 64) bits, most significant first. None, reading nothing, if
    /// fewer are left.
    fn read_bits(&mut self, n: u32) -> Option<u64> {
        let end = self.pos.checked_add(n as usize)?;
        if end.div_ceil(8) > self.bytes.len() {
            return None;
        }
        // Fast path for wide reads: the (at most 71) bits from the current byte on, in one
        // load (a bit or a few come from one byte below anyway).
        let first = self.pos / 8;
        if n > 8
            && n <= 64
            && let Some(window) = self.bytes.get(first..first + 16)
        {
            let mut buf = [0u8; 16];
            buf.copy_from_slice(window);
            let word = u128::from_be_bytes(buf) << (self.pos % 8);
            self.pos = end;
            return Some((word >> (128 - n)) as u64);
        }
        let mut out = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = u64::from(*self.bytes.get(self.pos / 8)?);
            let avail = 8 - (self.pos % 8) as u32;
            let take = avail.min(left);
            let bits = (byte >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | bits;
            self.pos += take as usize;
            left -= take;
        }
        Some(out)
    }

    /// Go's `binary.Uvarint`: at most 10 bytes, refusing overflow.
    fn read_uvarint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        for i in 0..10 {
            let byte = self.read_bits(8)?;
            if i == 9 && byte > 1 {
                return None;
            }
            x |= (byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(x);
            }
        }
        None
    }

    /// Go's `binary.Varint`: a uvarint, un-zigzagged.
    fn read_varint(&mut self) -> Option<i64> {
        let ux = self.read_uvarint()?;
        Some(((ux >> 1) as i64) ^ -((ux & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus' stale marker.
    const STALE: u64 = 0x7ff0_0000_0000_0002;

    /// A deterministic xorshift64 generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Uniform in `[0, 1)`.
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn build(samples: &[(i64, f64)]) -> Chunk {
        let mut c = Chunk::new();
        for &(t, v) in samples {
            assert!(c.append(t, v), "append ({t}, {v}) refused");
        }
        c
    }

    fn bits(samples: impl IntoIterator<Item = (i64, f64)>) -> Vec<(i64, u64)> {
        samples.into_iter().map(|(t, v)| (t, v.to_bits())).collect()
    }

    /// Builds a chunk of `samples`, checks everything reads back bit for bit (directly and
    /// through its bytes), and returns it.
    fn round_trip(samples: &[(i64, f64)]) -> Chunk {
        let c = build(samples);
        let want = bits(samples.iter().copied());
        assert_eq!(c.len(), samples.len());
        assert_eq!(c.is_empty(), samples.is_empty());
        assert_eq!(c.min_time(), samples.first().map(|s| s.0));
        assert_eq!(c.max_time(), samples.last().map(|s| s.0));
        assert_eq!(c.iter().size_hint(), (samples.len(), Some(samples.len())));
        assert_eq!(bits(c.iter()), want);
        assert_eq!(bits(&c), want);

        let bytes = c.bytes();
        assert_eq!(bytes.len(), c.encoded_len());
        let back = Chunk::from_bytes(&bytes).expect("a chunk's own bytes decode");
        assert_eq!(back, c, "restored state differs");
        assert_eq!(back.bytes(), bytes);
        assert_eq!(bits(back.iter()), want);
        c
    }

    fn per_sample(c: &Chunk) -> f64 {
        c.encoded_len() as f64 / c.len() as f64
    }

    /// Timestamps every 15 s from `start`.
    fn regular(n: usize, start: i64) -> impl Iterator<Item = i64> {
        (0..n as i64).map(move |i| start + i * 15_000)
    }

    const T0: i64 = 1_700_000_000_000;

    fn counter(n: usize, rng: &mut Rng, max_step: u64) -> Vec<(i64, f64)> {
        let mut v = 1000.0;
        regular(n, T0)
            .map(|t| {
                v += rng.below(max_step + 1) as f64;
                (t, v)
            })
            .collect()
    }

    fn gauge(n: usize, rng: &mut Rng) -> Vec<(i64, f64)> {
        regular(n, T0).map(|t| (t, rng.unit() * 100.0)).collect()
    }

    fn constant(n: usize, v: f64) -> Vec<(i64, f64)> {
        regular(n, T0).map(|t| (t, v)).collect()
    }

    /// A bit of everything: jitter, gaps, odd values.
    fn mixed(n: usize, rng: &mut Rng) -> Vec<(i64, f64)> {
        let mut t = -5_000_000;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            t += match rng.below(10) {
                0 => 1 + rng.below(3) as i64,
                1 => 86_400_000 * (1 + rng.below(30) as i64),
                2 => 1 + rng.below(1 << 40) as i64,
                _ => 15_000 + rng.below(20) as i64 - 10,
            };
            let v = match rng.below(8) {
                0 => f64::from_bits(STALE),
                1 => f64::from_bits(rng.next()),
                2 => -0.0,
                3 => f64::INFINITY,
                4 => i as f64,
                _ => rng.unit() * 1e6,
            };
            out.push((t, v));
        }
        out
    }

    #[test]
    fn empty_chunk() {
        let c = round_trip(&[]);
        assert_eq!(c, Chunk::default());
        assert_eq!(c.min_time(), None);
        assert_eq!(c.max_time(), None);
        assert_eq!(c.iter().next(), None);
        assert_eq!(c.bytes(), vec![FORMAT_XOR, 0, 0, 0, 0]);
        assert_eq!(c.encoded_len(), HEADER_LEN);
    }

    #[test]
    fn one_and_two_samples() {
        round_trip(&[(T0, 1.5)]);
        round_trip(&[(-1, f64::NAN)]);
        round_trip(&[(i64::MIN, -0.0)]);
        round_trip(&[(i64::MAX, f64::from_bits(STALE))]);
        round_trip(&[(T0, 1.5), (T0 + 15_000, 1.5)]);
        round_trip(&[(T0, 1.5), (T0 + 1, -2.25)]);
        round_trip(&[(0, f64::NAN), (1, f64::from_bits(STALE))]);
    }

    #[test]
    fn golden_bit_stream() {
        // Worked out by hand from xor.go's rules.
        let c = build(&[(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0)]);
        #[rustfmt::skip]
        let want = [
            FORMAT_XOR, 0, 0, 0, 4, // header: tag, count 4
            0x02,                                           // varint(1), zigzagged
            0x3f, 0xf0, 0, 0, 0, 0, 0, 0,                   // 1.0
            0x01,                                           // uvarint(delta 1)
            // '0' same value; '0' '0' (dod 0, same value); '0' dod 0, then
            // '1' '1' leading 00001, 11 meaningful bits 001011, 11111111111 (1.0 ^ 2.0)
            0b0000_1100, 0b0010_0101, 0b1111_1111, 0b1111_0000,
        ];
        assert_eq!(c.bytes(), want);
        assert_eq!(c.stream.bit_len, 108);
    }

    #[test]
    fn constant_values() {
        for v in [0.0, 42.0, -1e300, f64::MIN_POSITIVE, f64::NAN] {
            let c = round_trip(&constant(120, v));
            // Varint time (6 bytes), raw value (8), first delta (2) and a bit; then 2 bits a
            // sample for the other 118.
            let bits = (6 + 8 + 2) * 8 + 1 + 118 * 2;
            assert_eq!(c.encoded_len(), HEADER_LEN + usize::div_ceil(bits, 8));
        }
    }

    #[test]
    fn counters_with_random_steps() {
        let mut rng = Rng(1);
        for max_step in [1, 5, 1000, 1 << 20] {
            round_trip(&counter(500, &mut rng, max_step));
        }
        // A fractional counter (seconds of CPU).
        let mut v = 0.0;
        let samples: Vec<_> = regular(500, T0)
            .map(|t| {
                v += rng.unit() * 0.3;
                (t, v)
            })
            .collect();
        round_trip(&samples);
    }

    #[test]
    fn random_floats() {
        let mut rng = Rng(2);
        round_trip(&gauge(1000, &mut rng));
        // Any bit pattern at all: NaN payloads, subnormals, infinities.
        let samples: Vec<_> = (0..1000).map(|i| (i, f64::from_bits(rng.next()))).collect();
        round_trip(&samples);
        // Random scale too.
        let samples: Vec<_> = (0..1000)
            .map(|i| {
                let e = rng.below(600) as i32 - 300;
                (i, (rng.unit() - 0.5) * 10f64.powi(e))
            })
            .collect();
        round_trip(&samples);
    }

    #[test]
    fn nan_and_stale_marker() {
        let nans = [
            STALE,
            f64::NAN.to_bits(),
            0x7ff8_0000_0000_0000,
            0xfff8_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            0x7fff_ffff_ffff_ffff,
            0xffff_ffff_ffff_ffff,
            0x7ff8_dead_beef_0001,
        ];
        let mut samples = Vec::new();
        for (i, &n) in nans.iter().enumerate() {
            let t = i as i64 * 3 * 15_000;
            samples.push((t, 1.0));
            samples.push((t + 15_000, f64::from_bits(n)));
            samples.push((t + 30_000, f64::from_bits(STALE)));
        }
        let c = round_trip(&samples);
        assert!(c.iter().filter(|(_, v)| v.to_bits() == STALE).count() >= nans.len());
        round_trip(&constant(50, f64::from_bits(STALE)));
    }

    #[test]
    fn infinities_and_negative_zero() {
        let values = [
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::INFINITY,
            -0.0,
            f64::MAX,
            f64::MIN,
            -f64::MIN_POSITIVE,
            f64::NEG_INFINITY,
        ];
        let samples: Vec<_> = regular(values.len(), T0).zip(values).collect();
        let c = round_trip(&samples);
        let signs: Vec<bool> = c.iter().map(|(_, v)| v.is_sign_negative()).collect();
        let want: Vec<bool> = values.iter().map(|v| v.is_sign_negative()).collect();
        assert_eq!(signs, want);
        round_trip(&constant(10, -0.0));
    }

    #[test]
    fn regular_scrapes_with_jitter() {
        let mut rng = Rng(3);
        let mut t = T0;
        let mut v = 0.0;
        let samples: Vec<_> = (0..1000)
            .map(|_| {
                t += 15_000 + rng.below(11) as i64 - 5;
                v += rng.below(4) as f64;
                (t, v)
            })
            .collect();
        round_trip(&samples);
    }

    #[test]
    fn large_gaps_and_extreme_timestamps() {
        let day = 86_400_000;
        let mut rng = Rng(4);
        let mut t = T0;
        let samples: Vec<_> = (0..300)
            .map(|i| {
                t += if i % 3 == 0 {
                    day * (1 + rng.below(400) as i64)
                } else {
                    15_000
                };
                (t, i as f64)
            })
            .collect();
        round_trip(&samples);

        // Deltas near the whole i64 range: the first delta is 2^64 - 1 as a u64.
        round_trip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        round_trip(&[(i64::MIN, 1.0), (i64::MIN + 1, 2.0), (i64::MAX, 3.0)]);
        round_trip(&[(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)]);
        round_trip(&[
            (i64::MIN, 1.0),
            (-1, 2.0),
            (i64::MAX - 1, 3.0),
            (i64::MAX, 4.0),
        ]);
        let mut c = build(&[(i64::MAX - 1, 1.0), (i64::MAX, 1.0)]);
        assert!(!c.append(i64::MAX, 1.0));
    }

    #[test]
    fn negative_timestamps() {
        let samples: Vec<_> = regular(200, -2_000_000).map(|t| (t, t as f64)).collect();
        assert!(samples[0].0 < 0 && samples[199].0 > 0);
        round_trip(&samples);
        let samples: Vec<_> = (0..100).map(|i| (-1_000_000 + i * i, 0.5)).collect();
        round_trip(&samples);
    }

    #[test]
    fn many_samples() {
        let mut rng = Rng(5);
        for n in [120, 10_000] {
            round_trip(&counter(n, &mut rng, 10));
            round_trip(&gauge(n, &mut rng));
            round_trip(&mixed(n, &mut rng));
        }
    }

    #[test]
    fn dod_buckets_match_prometheus() {
        // Bits one more sample with the given delta-of-delta costs (the value repeats: 1 bit).
        let cost = |dod: i64| {
            let base = 1i64 << 40;
            let mut c = build(&[(0, 1.0), (base, 1.0), (2 * base, 1.0)]);
            let before = c.stream.bit_len;
            assert!(c.append(3 * base + dod, 1.0));
            let after = c.stream.bit_len;
            let samples = bits(c.iter());
            assert_eq!(samples.last(), Some(&(3 * base + dod, 1f64.to_bits())));
            round_trip(&c.iter().collect::<Vec<_>>());
            after - before
        };
        let cases = [
            (0, 2),
            (1, 17),
            (-1, 17),
            (8192, 17),
            (-8191, 17),
            (8193, 21),
            (-8192, 21),
            (65536, 21),
            (-65535, 21),
            (65537, 25),
            (-65536, 25),
            (524_288, 25),
            (-524_287, 25),
            (524_289, 69),
            (-524_288, 69),
            (1 << 39, 69),
            (-(1 << 39), 69),
        ];
        for (dod, bits) in cases {
            assert_eq!(cost(dod), bits, "dod {dod}");
        }
    }

    #[test]
    fn appends_not_newer_are_refused() {
        let mut c = Chunk::new();
        assert!(c.append(100, 1.0));
        let before = c.clone();
        assert!(!c.append(100, 2.0));
        assert!(!c.append(99, 2.0));
        assert!(!c.append(i64::MIN, 2.0));
        assert_eq!(c, before);
        assert!(c.append(200, 2.0));
        assert!(c.append(300, 3.0));
        let before = c.clone();
        assert!(!c.append(300, 3.0));
        assert!(!c.append(250, 3.0));
        assert!(!c.append(-300, 3.0));
        assert_eq!(c, before);
        assert_eq!(bits(c.iter()), bits([(100, 1.0), (200, 2.0), (300, 3.0)]));
        // An empty chunk takes any timestamp.
        assert!(Chunk::new().append(i64::MIN, 0.0));
    }

    #[test]
    fn restored_chunk_keeps_appending() {
        let mut rng = Rng(6);
        let shapes = [
            mixed(200, &mut rng),
            counter(150, &mut rng, 3),
            gauge(150, &mut rng),
            constant(50, 7.0),
        ];
        for samples in &shapes {
            let whole = build(samples);
            for split in 0..=samples.len() {
                let head = build(&samples[..split]);
                let mut c = Chunk::from_bytes(&head.bytes()).expect("decodes");
                assert_eq!(c, head);
                for &(t, v) in &samples[split..] {
                    assert!(c.append(t, v));
                }
                assert_eq!(c, whole, "split at {split}");
                assert_eq!(c.bytes(), whole.bytes());
            }
        }
    }

    #[test]
    fn from_bytes_refuses_bad_input() {
        let good = build(&[(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0)]).bytes();
        assert!(Chunk::from_bytes(&good).is_some());

        assert!(Chunk::from_bytes(&[]).is_none());
        assert!(Chunk::from_bytes(&good[..HEADER_LEN - 1]).is_none());
        // Wrong format tag.
        let mut bad = good.clone();
        bad[0] = 2;
        assert!(Chunk::from_bytes(&bad).is_none());
        // More samples counted than held, fewer, and a huge count. (Counting 5 or 6 would
        // pass: two more repeats, 2 bits each, fit in the 4 bits of padding. The format
        // cannot tell those apart, in Prometheus neither.)
        for count in [7u32, 3, u32::MAX] {
            let mut bad = good.clone();
            bad[1..5].copy_from_slice(&count.to_be_bytes());
            assert!(Chunk::from_bytes(&bad).is_none(), "count {count}");
        }
        // Trailing garbage, and non-zero padding.
        let mut bad = good.clone();
        bad.push(0);
        assert!(Chunk::from_bytes(&bad).is_none());
        let mut bad = good.clone();
        if let Some(last) = bad.last_mut() {
            *last |= 1;
        }
        assert!(Chunk::from_bytes(&bad).is_none());
        // No samples but a stream.
        assert!(Chunk::from_bytes(&[FORMAT_XOR, 0, 0, 0, 0, 0]).is_none());
        // Every truncation.
        for n in HEADER_LEN..good.len() {
            let mut cut = good[..n].to_vec();
            assert!(Chunk::from_bytes(&cut).is_none(), "cut at {n}");
            cut[1..5].copy_from_slice(&4u32.to_be_bytes());
            assert!(Chunk::from_bytes(&cut).is_none());
        }
        // Timestamps not increasing: a first delta of 0.
        let mut bad = good.clone();
        bad[HEADER_LEN + 9] = 0;
        assert!(Chunk::from_bytes(&bad).is_none());
        // An over-long varint.
        let mut bad = vec![FORMAT_XOR, 0, 0, 0, 1];
        bad.extend([0xff; 11]);
        bad.extend([0; 8]);
        assert!(Chunk::from_bytes(&bad).is_none());
    }

    /// What any chunk accepted from bytes must satisfy.
    fn check_accepted(input: &[u8], c: &Chunk) {
        assert_eq!(c.bytes(), input);
        let samples: Vec<_> = c.iter().collect();
        assert_eq!(samples.len(), c.len());
        assert!(samples.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(c.min_time(), samples.first().map(|s| s.0));
        assert_eq!(c.max_time(), samples.last().map(|s| s.0));
        let mut more = c.clone();
        if let Some(t) = c.max_time().and_then(|t| t.checked_add(15_000)) {
            assert!(more.append(t, 1.0));
            let again: Vec<_> = more.iter().collect();
            assert_eq!(again.len(), c.len() + 1);
            assert_eq!(bits(again[..c.len()].iter().copied()), bits(samples));
        }
    }

    /// Feeds corrupt bytes to `from_bytes` and the raw stream to the iterator; neither may
    /// panic, and the iterator may yield at most the counted samples.
    fn probe(input: &[u8]) -> bool {
        let accepted = Chunk::from_bytes(input);
        if let Some(c) = &accepted {
            check_accepted(input, c);
        }
        if let Some((header, stream)) = input.split_at_checked(HEADER_LEN) {
            let count = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let count = count.min(100_000);
            let it = ChunkIter {
                reader: BitReader::new(stream),
                state: State::default(),
                index: 0,
                count,
            };
            let yielded: Vec<_> = it.collect();
            assert!(yielded.len() <= count as usize);
            assert!(yielded.windows(2).all(|w| w[0].0 < w[1].0));
        }
        accepted.is_some()
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let mut rng = Rng(7);
        let sources = [
            build(&mixed(120, &mut rng)).bytes(),
            build(&counter(120, &mut rng, 5)).bytes(),
            build(&gauge(60, &mut rng)).bytes(),
            build(&constant(40, 1.0)).bytes(),
            build(&mixed(2000, &mut rng)).bytes(),
        ];
        let mut accepted = 0;
        let mut tried = 0;
        for src in &sources {
            // Every truncation of the small ones, random ones of the big one.
            if src.len() < 2000 {
                for n in 0..src.len() {
                    tried += 1;
                    accepted += usize::from(probe(&src[..n]));
                }
            } else {
                for _ in 0..300 {
                    tried += 1;
                    accepted += usize::from(probe(&src[..rng.below(src.len() as u64) as usize]));
                }
            }
            // Bit flips, one to four at a time, sometimes truncated too.
            for _ in 0..1500 {
                let mut bad = src.clone();
                for _ in 0..1 + rng.below(4) {
                    let bit = rng.below(bad.len() as u64 * 8) as usize;
                    bad[bit / 8] ^= 1 << (bit % 8);
                }
                if rng.below(4) == 0 {
                    bad.truncate(rng.below(bad.len() as u64 + 1) as usize);
                }
                tried += 1;
                accepted += usize::from(probe(&bad));
            }
        }
        // Random garbage behind a valid-looking header.
        for _ in 0..2000 {
            let len = rng.below(64) as usize;
            let mut bad = vec![FORMAT_XOR, 0, 0, 0, rng.below(20) as u8];
            bad.extend((0..len).map(|_| rng.next() as u8));
            tried += 1;
            accepted += usize::from(probe(&bad));
        }
        eprintln!("{accepted} of {tried} corrupt inputs accepted");
        assert!(tried > 10_000);
        // The original, untouched, stays accepted; most corruptions are caught.
        assert!(sources.iter().all(|s| probe(s)));
        assert!(accepted < tried / 2, "{accepted} of {tried} accepted");
    }

    #[test]
    fn regular_counter_compresses_under_two_bytes_a_sample() {
        let mut rng = Rng(8);
        let c = round_trip(&counter(120, &mut rng, 5));
        let per = per_sample(&c);
        assert!(per < 2.0, "{per} bytes a sample");
    }

    #[test]
    fn bytes_per_sample_report() {
        let mut rng = Rng(9);
        let mut jittered = Vec::new();
        let mut t = T0;
        let mut v = 0.0;
        for _ in 0..120 {
            t += 15_000 + rng.below(11) as i64 - 5;
            v += rng.below(6) as f64;
            jittered.push((t, v));
        }
        let shapes = [
            (
                "regular 15 s counter, steps 0..=5",
                counter(120, &mut rng, 5),
            ),
            ("regular 15 s counter, jitter ±5 ms", jittered),
            ("gauge of random floats", gauge(120, &mut rng)),
            ("constant", constant(120, 42.0)),
            ("mixed", mixed(120, &mut rng)),
        ];
        eprintln!("bytes per sample, 120 samples (5-byte header included):");
        for (name, samples) in &shapes {
            let c = round_trip(samples);
            eprintln!(
                "  {name:<40} {:>6.3}  ({} bytes)",
                per_sample(&c),
                c.encoded_len()
            );
        }
        let constant = build(&shapes[3].1);
        assert!(per_sample(&constant) < 0.5);
        let random = build(&shapes[2].1);
        assert!(per_sample(&random) < 10.0);
    }
}
