//! The migrations are embedded at compile time (`embed_migrations!`): rebuild this crate
//! whenever one is added, removed or edited, not only when its own sources change.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
