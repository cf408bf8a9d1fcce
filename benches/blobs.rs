//! What the S3 store costs against the directory store, per document: store (put_file) and read
//! back (get, hash-checked) for 1 KB, 1 MB and 100 MB inputs, median of several rounds. The S3
//! server is s3s-fs on 127.0.0.1 (what the tests use), so the figures are the protocol's and the
//! client's cost, not a network's.
//!
//! `cargo bench --bench blobs --profile dev`

#[path = "../tests/common/s3.rs"]
mod s3;

use std::time::Instant;

use docpipe::blob::{key_for, BlobStore, FileStore, S3Store};
use docpipe::config::{Config, EMBEDDED};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Milliseconds to store a fresh file of `size` bytes, and to read it back.
fn measure(store: &dyn BlobStore, dir: &std::path::Path, size: usize, rounds: usize) -> (f64, f64) {
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Different bytes each round: a stored digest would skip the upload.
        let bytes: Vec<u8> = (0..size).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(round as u32 * 7919) as u8 ^ (i >> 11) as u8).collect();
        let path = dir.join(format!("input-{size}-{round}"));
        std::fs::write(&path, &bytes).unwrap();
        let started = Instant::now();
        let (sha, _) = store.put_file(&path).unwrap();
        put.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let back = store.get(&key_for(&sha)).unwrap();
        get.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(back.len(), size);
        std::fs::remove_file(&path).unwrap();
    }
    (median(put), median(get))
}

/// The bench table for one server: as s3s-fs ships, or with `preload` (the TCP_NODELAY shim).
fn table(preload: Option<&std::path::Path>) {
    match preload {
        Some(shim) => std::env::set_var("LD_PRELOAD", shim),
        None => std::env::remove_var("LD_PRELOAD"),
    }
    let server = s3::S3Server::start();
    std::env::remove_var("LD_PRELOAD");
    for (key, value) in server.env() {
        if key.starts_with("DOCPIPE_S3_") {
            std::env::set_var(key, value);
        }
    }
    let config = Config::from_toml("bench", EMBEDDED, server.env()).unwrap();
    let remote = S3Store::new(&config.blobs.s3).unwrap();
    let work = tempfile::tempdir().unwrap();
    let local = FileStore::new(work.path().join("blobs"));
    let server_name = if preload.is_some() { "s3s-fs with TCP_NODELAY" } else { "s3s-fs as shipped" };
    for (label, size, rounds) in [("1 KB", 1 << 10, 21), ("1 MB", 1 << 20, 11), ("100 MB", 100 << 20, 3)] {
        let (dir_put, dir_get) = measure(&local, work.path(), size, rounds);
        let (s3_put, s3_get) = measure(&remote, work.path(), size, rounds);
        println!(
            "| {label} | {server_name} | {dir_put:.2} / {dir_get:.2} | {s3_put:.2} / {s3_get:.2} | {:.2} |",
            (s3_put + s3_get) - (dir_put + dir_get)
        );
    }
}

fn main() {
    println!("| input | S3 server | directory: store / read (ms) | S3: store / read (ms) | S3 extra per document (ms) |");
    println!("|---|---|---:|---:|---:|");
    table(None);
    // The shim, built here with the machine's C compiler; without one, the first table only.
    let shim = std::env::temp_dir().join(format!("docpipe-nodelay-{}.so", std::process::id()));
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/nodelay.c");
    let built = std::process::Command::new("cc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&shim).arg(&source).arg("-ldl").status();
    if built.is_ok_and(|s| s.success()) {
        table(Some(&shim));
        let _ = std::fs::remove_file(&shim);
    }
}
