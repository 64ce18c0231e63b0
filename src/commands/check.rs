//! `ringlb check`: validates a manifest like `nginx -t`, with the line and column of each error.

use crate::cli::CheckArgs;
use ringlb::manifest::{Manifest, ManifestError};
use std::process::ExitCode;

/// `ringlb check`: exit 0 with a summary, or 1 with each error and where it is.
pub fn run(args: &CheckArgs) -> ExitCode {
    let path = args.manifest.as_path();
    match Manifest::load(path) {
        Ok((manifest, _)) => {
            println!("{}: ok: {}", path.display(), manifest.summary());
            ExitCode::SUCCESS
        }
        Err(ManifestError::Invalid(errors)) => {
            for error in errors {
                match error.position {
                    Some(p) => eprintln!(
                        "{}:{}:{}: {}: {}",
                        path.display(),
                        p.line,
                        p.column,
                        error.field,
                        error.message
                    ),
                    None => eprintln!("{}: {}: {}", path.display(), error.field, error.message),
                }
            }
            ExitCode::FAILURE
        }
        Err(ManifestError::Syntax { message, position, snippet }) => {
            match position {
                Some(p) => eprintln!("{}:{}:{}: {message}", path.display(), p.line, p.column),
                None => eprintln!("{}: {message}", path.display()),
            }
            if !snippet.is_empty() {
                eprintln!("{snippet}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}
