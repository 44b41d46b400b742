//! Every committed seed and every input that once crashed (`fuzz/regressions/`) passes its
//! target's oracles: the targets' logic replayed without libFuzzer
//! (`cargo test --manifest-path fuzz/Cargo.toml`, stable or nightly).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [
        root.join("seeds").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("seed");
            eprintln!("{}", path.display());
            run(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn decode_seeds() {
    replay("decode", intake_fuzz::decode::run);
}

#[test]
fn envelope_codec_seeds() {
    replay("envelope_codec", intake_fuzz::codec::run);
}

#[test]
fn auth_seeds() {
    replay("auth", intake_fuzz::auth::run);
}

#[test]
fn receiver_seeds() {
    replay("receiver", intake_fuzz::receiver::run);
}
