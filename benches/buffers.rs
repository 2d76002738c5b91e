//! Micro-benchmarks of the outbound queue: what one callback's writes cost before the send.
//!
//! `cargo bench --bench buffers`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gnet::outbound::Outbound;

fn coalesced_small_writes(c: &mut Criterion) {
    let msg = [7u8; 64];
    let mut g = c.benchmark_group("outbound");
    g.throughput(Throughput::Bytes(16 * 64));
    g.bench_function("16 x 64 B writes + take", |b| {
        let mut o = Outbound::default();
        b.iter(|| {
            for _ in 0..16 {
                o.write(black_box(&msg));
            }
            black_box(o.take())
        })
    });
    g.throughput(Throughput::Bytes(512));
    g.bench_function("one 512 B write + take (echo)", |b| {
        let mut o = Outbound::default();
        let m = [1u8; 512];
        b.iter(|| {
            o.write(black_box(&m));
            black_box(o.take())
        })
    });
    let big = Bytes::from(vec![3u8; 16 * 1024]);
    g.throughput(Throughput::Bytes(4 * 16 * 1024));
    g.bench_function("4 x 16 KiB zero-copy Bytes + take", |b| {
        let mut o = Outbound::default();
        b.iter(|| {
            for _ in 0..4 {
                o.write_bytes(big.clone());
            }
            black_box(o.take())
        })
    });
    g.throughput(Throughput::Bytes(16 * 1024 + 2 * 64));
    g.bench_function("header + 16 KiB Bytes + trailer + take", |b| {
        let mut o = Outbound::default();
        b.iter(|| {
            o.write(black_box(&msg));
            o.write_bytes(big.clone());
            o.write(black_box(&msg));
            black_box(o.take())
        })
    });
    g.finish();
}

criterion_group!(benches, coalesced_small_writes);
criterion_main!(benches);
