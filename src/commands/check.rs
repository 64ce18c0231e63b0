//! `ringlb check`: validates a manifest like `nginx -t`, with the line and column of each error,
//! and the certificates `tls.certificates` names with the checks the TLS listener makes (readable,
//! PEM, a key that belongs to the certificate, valid now).

use crate::cli::CheckArgs;
use ringlb::manifest::locate::locate;
use ringlb::manifest::{Manifest, ManifestError};
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

/// `ringlb check`: exit 0 with a summary, or 1 with each error and where it is.
pub fn run(args: &CheckArgs) -> ExitCode {
    let path = args.manifest.as_path();
    match Manifest::load(path) {
        Ok((manifest, text)) => {
            if !certificates_serve(&manifest, &text, path) {
                return ExitCode::FAILURE;
            }
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

/// Checks each certificate of `tls.certificates` (relative paths from the manifest's directory):
/// prints what each serves, or each error with the field's position; `false` if any fails.
fn certificates_serve(manifest: &Manifest, text: &str, path: &Path) -> bool {
    let Some(tls) = &manifest.tls else {
        return true;
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut all_good = true;
    for (field, outcome) in ringlb::certificates::check_each(&tls.certificates, dir, SystemTime::now()) {
        match outcome {
            Ok(facts) => println!(
                "{}: {field}: serial {}, valid until {}",
                path.display(),
                facts.serial,
                ringlb::certificates::utc(facts.not_after)
            ),
            Err(error) => {
                all_good = false;
                match locate(text, &field) {
                    Some(p) => eprintln!("{}:{}:{}: {field}: {error}", path.display(), p.line, p.column),
                    None => eprintln!("{}: {field}: {error}", path.display()),
                }
            }
        }
    }
    all_good
}
