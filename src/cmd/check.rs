//! `check FILE...`: is each file a valid usage file of its profile? Parses, looks for
//! conflict markers, checks types, and checks that counters cover their records.

use super::profile_arg;
use crate::cli::CheckArgs;
use crate::engine;
use crate::error::{Error, Result};
use crate::exit;
use crate::json;
use crate::profile;
use std::path::Path;

pub fn run(dir: &Path, args: &CheckArgs) -> Result<i32> {
    let forced = profile_arg(args.profile.as_deref())?;
    let mut failed = 0;
    for file in &args.files {
        let path = if file.is_absolute() { file.clone() } else { dir.join(file) };
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let name = file.display();
        let doc = match json::parse(&bytes) {
            Ok(d) => d,
            Err(problem) => {
                failed += 1;
                eprintln!("{name}: {problem}");
                continue;
            }
        };
        let profile = forced.unwrap_or_else(|| profile::detect(&[Some(&doc)]));
        match engine::check(profile, &doc) {
            Ok(findings) if findings.is_empty() => {
                println!("{name}: ok ({} profile)", profile.name)
            }
            Ok(findings) => {
                failed += 1;
                for f in findings {
                    eprintln!("{name}: {}: {}", f.path, f.message);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {}", e.to_string().trim_start_matches("ours: "));
            }
        }
    }
    Ok(if failed == 0 { exit::OK } else { exit::CONFLICT })
}
