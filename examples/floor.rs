//! The benchmark floor: parse three JSON files into serde_json values and write one out,
//! with no merge logic (`floor BASE OURS THEIRS OUT`). Same serde_json build as git-tally.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let read = |p: &str| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap();
    let (_o, a, _b) = (read(&args[1]), read(&args[2]), read(&args[3]));
    std::fs::write(&args[4], serde_json::to_vec_pretty(&a).unwrap()).unwrap();
}
