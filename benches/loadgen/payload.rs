//! What each message carries, and the check of every echoed byte against it.
//!
//! A message of `size` bytes starts with a 16-byte header, cut short when `size` is smaller:
//!
//! ```text
//! offset 0      4              12        16                              size
//!        +------+--------------+---------+--------------------------------+
//!        | conn | seq          | size    | fill: PATTERN[(k + i) mod 64Ki] |
//!        | u32  | u64          | u32     | k = mix(conn, seq) mod 64Ki     |
//!        +------+--------------+---------+--------------------------------+
//! ```
//!
//! (all little-endian; `i` is the offset in the message). The fill is a pseudo-random 64 KiB
//! table entered at a point that depends on the connection and the sequence number, so a
//! byte echoed on the wrong connection, out of order, duplicated or lost shows up as a
//! mismatch. The table is stored twice over so that any window of up to 64 KiB is one slice
//! and both filling and checking are `memcpy`/`memcmp` of slices.

pub const HEADER_LEN: usize = 16;
const PATTERN_LEN: usize = 1 << 16;
const PATTERN_MASK: usize = PATTERN_LEN - 1;

/// The first byte that differs from what was sent.
pub struct Mismatch {
    pub offset: usize,
    pub expected: u8,
    pub got: u8,
}

pub struct Payload {
    size: usize,
    pattern: Vec<u8>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Payload {
    pub fn new(size: usize) -> Self {
        let mut pattern = Vec::with_capacity(2 * PATTERN_LEN);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        while pattern.len() < PATTERN_LEN {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            pattern.extend_from_slice(&mix(state).to_le_bytes());
        }
        pattern.extend_from_within(..PATTERN_LEN);
        Payload { size, pattern }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn header(&self, conn: u32, seq: u64) -> [u8; HEADER_LEN] {
        let mut h = [0; HEADER_LEN];
        h[..4].copy_from_slice(&conn.to_le_bytes());
        h[4..12].copy_from_slice(&seq.to_le_bytes());
        h[12..].copy_from_slice(&(self.size as u32).to_le_bytes());
        h
    }

    /// Calls `f(offset, expected)` for consecutive pieces covering `[from, from + len)` of
    /// message `(conn, seq)`.
    fn pieces(
        &self,
        conn: u32,
        seq: u64,
        from: usize,
        len: usize,
        mut f: impl FnMut(usize, &[u8]),
    ) {
        let end = from + len;
        let mut at = from;
        if at < HEADER_LEN {
            let header = self.header(conn, seq);
            let stop = end.min(HEADER_LEN);
            f(at, &header[at..stop]);
            at = stop;
        }
        let start = (mix((u64::from(conn) << 40) ^ seq) as usize) & PATTERN_MASK;
        while at < end {
            let j = (start + at) & PATTERN_MASK;
            let n = (end - at).min(PATTERN_LEN);
            f(at, &self.pattern[j..j + n]);
            at += n;
        }
    }

    /// Writes bytes `[from, from + out.len())` of message `(conn, seq)` into `out`.
    pub fn fill(&self, conn: u32, seq: u64, from: usize, out: &mut [u8]) {
        self.pieces(conn, seq, from, out.len(), |at, src| {
            out[at - from..at - from + src.len()].copy_from_slice(src);
        });
    }

    /// Checks that `got` equals bytes `[from, from + got.len())` of message `(conn, seq)`.
    pub fn verify(&self, conn: u32, seq: u64, from: usize, got: &[u8]) -> Result<(), Mismatch> {
        let mut first_bad = None;
        self.pieces(conn, seq, from, got.len(), |at, want| {
            let have = &got[at - from..at - from + want.len()];
            if first_bad.is_none() && have != want {
                let i = have.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                first_bad = Some(Mismatch {
                    offset: at + i,
                    expected: want[i],
                    got: have[i],
                });
            }
        });
        first_bad.map_or(Ok(()), Err)
    }
}
