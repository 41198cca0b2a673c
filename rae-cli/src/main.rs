//! `rae-cli`: training and sampling of RAE + DiT-DH from the command line.

fn main() {
    println!("rae-cli");
}
