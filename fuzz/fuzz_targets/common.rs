//! What every target checks: the input cut into receives as its first bytes say, fed to a
//! decoder as a connection feeds it, must never panic, never buffer past `bound` bytes for
//! an unfinished frame, and must decode to the same frames as the input fed whole (up to the
//! first error).

use gnet::codec::{CodecError, Decoded, Decoder};

/// Frames decoded, the bytes left, and whether it ended in an error.
type Outcome = (Vec<Vec<u8>>, Vec<u8>, bool);

fn feed<D: Decoder>(d: &mut D, pieces: &[&[u8]], bound: usize) -> Outcome {
    let mut frames = Vec::new();
    let mut buffered: Vec<u8> = Vec::new();
    for piece in pieces {
        buffered.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            if pos == buffered.len() {
                break;
            }
            match d.decode(&buffered[pos..]) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert!(consumed >= 1 && consumed <= buffered.len() - pos);
                    frames.push(frame.to_vec());
                    pos += consumed;
                }
                Ok(Decoded::NeedMore) => break,
                Err(CodecError::FrameTooLong { .. })
                | Err(CodecError::LengthBelowHeader { .. })
                | Err(CodecError::NegativeLength { .. })
                | Err(CodecError::StripBeyondFrame { .. }) => {
                    buffered.drain(..pos);
                    return (frames, buffered, true);
                }
                Err(e) => panic!("unexpected decoding error: {e}"),
            }
        }
        buffered.drain(..pos);
        assert!(
            buffered.len() <= bound,
            "{} bytes buffered, bound {bound}",
            buffered.len()
        );
    }
    (frames, buffered, false)
}

/// Splits `data` into a cut count (its first byte) and the stream, cuts it and checks `make`'s
/// decoders on it.
pub fn check<D: Decoder>(data: &[u8], bound: usize, make: impl Fn() -> D) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut pieces = Vec::new();
    let mut rest = stream;
    let mut x = u32::from(seed) | 1;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 17 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        pieces.push(a);
        rest = b;
    }
    let whole = feed(&mut make(), &[stream], usize::MAX);
    let split = feed(&mut make(), &pieces, bound);
    if !whole.2 && !split.2 {
        assert_eq!(whole, split);
    } else {
        // Both end in an error, after the same frames (an error is found as soon as the
        // bytes that show it are in, however they were cut).
        assert_eq!(whole.2, split.2);
        assert_eq!(whole.0, split.0);
    }
}
