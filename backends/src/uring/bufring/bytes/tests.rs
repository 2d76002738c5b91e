//! Unit tests of the buffer ring, without a kernel: the tests write where the kernel would.

use super::super::{Run, CYCLE_BYTES};
use super::{ByteRing, MIN_CHUNK};

/// Entries not lent out.
fn free(br: &ByteRing) -> usize {
    usize::from(br.desc.entries) - br.out
}

fn total(br: &ByteRing) -> usize {
    usize::from(br.desc.entries)
}

/// Writes `bytes` where the entries from the ring's head start, as the kernel does for a
/// receive (through the first mapping only: the entry's own address).
fn kernel_write(br: &ByteRing, bytes: &[u8]) {
    let mut left = bytes;
    for e in &br.posted {
        if left.is_empty() {
            break;
        }
        let n = left.len().min(e.len as usize);
        let at = br.offset(e.pos);
        assert!(at + n <= br.area.mapped());
        // SAFETY: the entry lies inside the mapping (checked above) and nothing else
        // accesses the area during the test.
        unsafe { std::ptr::copy_nonoverlapping(left.as_ptr(), br.area.base.as_ptr().add(at), n) };
        left = &left[n..];
    }
    assert!(left.is_empty(), "more bytes than the ring holds");
}

/// One bundle of `bytes`: written, taken, checked through `data`, handed back and followed by
/// the replenish and resize of the end of a poll. Returns the runs.
fn receive(br: &mut ByteRing, bytes: &[u8]) -> Vec<Run> {
    let head = *br.posted.front().expect("an entry in the ring");
    kernel_write(br, bytes);
    let mut runs = Vec::new();
    br.take_filled(head.bid, bytes.len(), &mut runs);
    let mut got = Vec::new();
    for &r in &runs {
        // SAFETY: the run was just taken and is not recycled until below.
        got.extend_from_slice(unsafe { br.data(r) });
    }
    assert!(got == bytes, "the runs do not hold the bytes written");
    for &r in &runs {
        br.recycle_run(r);
    }
    br.replenish();
    br.adapt();
    runs
}

fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + seed * 13) % 251) as u8).collect()
}

#[test]
fn bundles_are_one_slice_even_across_the_end_of_the_area() {
    let mut br = ByteRing::new(256, 64 * 1024).unwrap();
    assert!(br.area.mirrored, "no mirrored mapping here");
    assert_eq!(br.area.size, CYCLE_BYTES);
    assert_eq!(br.posted.len(), CYCLE_BYTES / (64 * 1024));
    // Bundles of one to three and a half entries go round the area dozens of times.
    let mut wraps = 0;
    for i in 0..400 {
        let len = 20_000 + (i * 37_919) % (3 * 64 * 1024);
        let before = br.offset(br.pos);
        let runs = receive(&mut br, &pattern(len, i));
        assert_eq!(runs.len(), 1, "receive {i} of {len} bytes: {runs:?}");
        assert_eq!(runs[0].len, len);
        wraps += usize::from(br.offset(br.pos) < before);
    }
    assert!(wraps > 20, "the carving went round only {wraps} times");
    assert_eq!(br.splits, 0);
    assert_eq!(free(&br), total(&br));
}

#[test]
fn without_the_second_mapping_a_bundle_across_the_end_is_two_slices() {
    let mut br = ByteRing::build(256, 64 * 1024, false).unwrap();
    assert!(!br.area.mirrored);
    let mut splits = 0;
    for i in 0..200 {
        let len = 20_000 + (i * 37_919) % (3 * 64 * 1024);
        let runs = receive(&mut br, &pattern(len, i));
        assert!(runs.len() <= 2, "{runs:?}");
        // No entry runs past the end of the area.
        for e in &br.posted {
            assert!(br.offset(e.pos) + e.len as usize <= br.area.size, "{e:?}");
        }
        splits += runs.len() - 1;
    }
    assert!(splits > 0, "no bundle crossed the end");
    assert_eq!(free(&br), total(&br));
}

#[test]
fn entries_follow_the_size_of_the_receives() {
    let mut br = ByteRing::new(256, 64 * 1024).unwrap();
    // Small messages: the smallest entries, as many as the ring has.
    for i in 0..40 {
        receive(&mut br, &pattern(100, i));
    }
    assert_eq!(br.chunk, (CYCLE_BYTES / 256).max(MIN_CHUNK));
    assert_eq!(br.window, 256);
    assert_eq!(br.posted.len(), 256);
    // 16 KiB messages: 16 KiB entries, the area's worth of them.
    for i in 0..100 {
        receive(&mut br, &pattern(16 * 1024, i));
    }
    assert_eq!(br.chunk, 16 * 1024);
    assert_eq!(br.window, CYCLE_BYTES / (16 * 1024));
    // Large bundles: the largest entries.
    for i in 0..40 {
        receive(&mut br, &pattern(200 * 1024, i));
    }
    assert_eq!(br.chunk, 64 * 1024);
    assert_eq!(br.window, CYCLE_BYTES / (64 * 1024));
    assert_eq!(free(&br), total(&br));
}

#[test]
fn bytes_lent_out_are_never_posted_again_until_recycled() {
    let mut br = ByteRing::new(16, 64 * 1024).unwrap();
    let mut runs = Vec::new();
    // Hold the first receive's bytes while many more go round the area.
    let first = br.posted.front().unwrap().bid;
    br.take_filled(first, 100 * 1024, &mut runs);
    let held = runs[0];
    let size = br.area.size as u64;
    for i in 0..100 {
        br.replenish();
        let Some(e) = br.posted.front().copied() else {
            break;
        };
        // No entry in the ring reaches round the area onto the held bytes.
        for p in &br.posted {
            assert!(
                p.pos + u64::from(p.len) - held.pos <= size,
                "{p:?}, {held:?} ({i})"
            );
        }
        let mut more = Vec::new();
        br.take_filled(e.bid, e.len as usize, &mut more);
        for r in more {
            br.recycle_run(r);
        }
    }
    // The ring ran dry behind the held run rather than carve over it.
    assert!(br.available() < br.window, "available {}", br.available());
    br.recycle_run(held);
    br.replenish();
    assert_eq!(br.available(), br.window);
    assert_eq!(free(&br), total(&br));
}

#[test]
fn the_mirrored_area_is_not_inherited_by_a_child() {
    let br = ByteRing::new(256, 64 * 1024).unwrap();
    assert!(br.area.mirrored);
    // /proc/self/smaps: each mapping's header line starts with its address range, and its
    // VmFlags line lists `dc` (do not copy on fork) when MADV_DONTFORK applies.
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{:x}-", br.area.base.as_ptr() as usize);
    let flags = smaps
        .split_once(&start)
        .and_then(|(_, rest)| rest.lines().find(|l| l.starts_with("VmFlags:")))
        .expect("the area's mapping in /proc/self/smaps");
    assert!(flags.split_whitespace().any(|f| f == "dc"), "{flags}");
}

#[test]
fn a_completion_naming_an_absent_buffer_takes_nothing() {
    let mut br = ByteRing::new(4, 16).unwrap();
    let mut runs = Vec::new();
    let ids: Vec<u16> = br.posted.iter().map(|e| e.bid).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    br.take_filled(0, 16, &mut runs);
    // Entry 0 is out; a second completion naming it must not hand it out twice.
    br.take_filled(0, 16, &mut runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(free(&br), 3);
    // A completion naming an entry past the head takes from there (and logs).
    br.take_filled(2, 16, &mut runs);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].pos, 32);
    assert_eq!(free(&br), 2);
}

#[test]
fn a_bundle_is_capped_by_the_entries_in_the_ring() {
    let mut br = ByteRing::new(4, 16).unwrap();
    let mut runs = Vec::new();
    br.take_filled(0, 1000, &mut runs);
    assert_eq!(
        runs,
        [Run {
            pos: 0,
            count: 4,
            len: 64
        }]
    );
    assert_eq!(free(&br), 0);
}
