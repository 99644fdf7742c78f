//! The README's library example, compiled with the project (`cargo run --example embed
//! -- <repo>`): record one event and sync.

use git_tally::{event::Event, sync::Sync};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let sync = Sync::open(std::path::Path::new(&repo), |_| Ok(()))?;
    let now = chrono::Utc::now().fixed_offset();
    let event = Event::parse(r#"{"model":"gpt-5","input_tokens":1200,"output_tokens":80}"#, now, "laptop")?;
    sync.ledger.record(vec![event])?; // durable when it returns
    sync.sync()?; // or sync.flush(Duration::from_secs(20))?
    Ok(())
}
