//! Writes the seed corpus: `make-seeds [DOCS_DIR] [OUT_DIR]` (defaults `../shared/providers`
//! and `fuzz/seeds`, relative to the repository root where it runs).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let docs = PathBuf::from(args.next().unwrap_or_else(|| "../shared/providers".into()));
    let out = PathBuf::from(args.next().unwrap_or_else(|| "fuzz/seeds".into()));
    if !docs.is_dir() {
        eprintln!("note: {} not found; seeds from the fixtures only", docs.display());
    }
    for (target, count) in intake_fuzz::seeds::write_all(&out, &docs)? {
        println!("{target}: {count} seeds");
    }
    Ok(())
}
