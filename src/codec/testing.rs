//! Drivers for the codecs' unit and property tests: a decoder fed as a connection feeds it.

use super::{CodecError, Decoded, Decoder};

/// Frames decoded, and what was left over.
pub(crate) type Outcome = (Vec<Vec<u8>>, Vec<u8>);

/// Decodes every frame of `input` at once.
pub(crate) fn decode_all<D: Decoder>(d: &mut D, input: &[u8]) -> Result<Outcome, CodecError> {
    decode_split(d, input, &[])
}

/// Decodes `input` delivered in pieces cut at `cuts` (ascending offsets), keeping what is not
/// consumed in a buffer as a connection does and checking the decoder's contract on the way:
/// progress on every frame, nothing buffered past `bound` (when given).
pub(crate) fn decode_split<D: Decoder>(
    d: &mut D,
    input: &[u8],
    cuts: &[usize],
) -> Result<Outcome, CodecError> {
    decode_bounded(d, input, cuts, usize::MAX)
}

/// [`decode_split`], failing the test if more than `bound` bytes are ever left buffered.
pub(crate) fn decode_bounded<D: Decoder>(
    d: &mut D,
    input: &[u8],
    cuts: &[usize],
    bound: usize,
) -> Result<Outcome, CodecError> {
    let mut frames = Vec::new();
    let mut buffered: Vec<u8> = Vec::new();
    let mut at = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = end.clamp(at, input.len());
        buffered.extend_from_slice(&input[at..end]);
        at = end;
        let mut pos = 0;
        while pos < buffered.len() {
            match d.decode(&buffered[pos..])? {
                Decoded::Frame { frame, consumed } => {
                    assert!(consumed >= 1 && consumed <= buffered.len() - pos);
                    frames.push(frame.to_vec());
                    pos += consumed;
                }
                Decoded::NeedMore => break,
            }
        }
        buffered.drain(..pos);
        assert!(
            buffered.len() <= bound,
            "{} bytes buffered, more than {bound}",
            buffered.len()
        );
    }
    Ok((frames, buffered))
}
