//! Writes the bad-input corpus (see `tests/corpus/mod.rs` and `docs/bad-inputs.md`):
//! `cargo run -p birads --example bad_corpus -- DIR`.

#[path = "../tests/corpus/mod.rs"]
mod corpus;

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: bad_corpus DIR");
        std::process::exit(1);
    };
    let root = corpus::write_corpus(std::path::Path::new(&dir));
    println!(
        "wrote {} listed items (and good ones beside them) under {}",
        corpus::ITEMS.len(),
        root.display()
    );
    for item in corpus::ITEMS {
        println!("  {:<70} {}", item.path, item.what);
    }
}
