//! sp2a service keeping small text notes in the directory it is granted.
//!
//! The node mounts the granted host directory at `/notes`; the service
//! cannot see anything else of the host file system. Names are validated
//! here too, so a bad name is a clear error rather than a sandbox refusal.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

sp2a_guest::service!({
    path: ["../../wit", "wit"],
    world: "sp2a:notes/notes-service",
});

const ROOT: &str = "/notes";
const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 64 * 1024;

struct Notes;

fn note_path(name: &str) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(PathBuf::from(ROOT).join(name))
    } else {
        Err(format!(
            "invalid note name {name:?}: use 1-{MAX_NAME} characters of [A-Za-z0-9._-], not starting with '.'"
        ))
    }
}

fn io_error(action: &str, name: &str, err: std::io::Error) -> String {
    format!("cannot {action} note {name:?}: {err}")
}

impl exports::sp2a::notes::notes::Guest for Notes {
    fn put(name: String, text: String) -> Result<(), String> {
        let path = note_path(&name)?;
        if text.len() > MAX_TEXT {
            return Err(format!(
                "note {name:?} is {} bytes; the limit is {MAX_TEXT}",
                text.len()
            ));
        }
        fs::write(&path, text).map_err(|e| io_error("write", &name, e))?;
        sp2a_guest::debug!("stored note {name}");
        Ok(())
    }

    fn get(name: String) -> Result<String, String> {
        let path = note_path(&name)?;
        fs::read_to_string(&path).map_err(|e| io_error("read", &name, e))
    }

    fn names() -> Result<Vec<String>, String> {
        let entries = fs::read_dir(ROOT).map_err(|e| format!("cannot list {ROOT}: {e}"))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {ROOT}: {e}"))?;
            if let Some(name) = entry.file_name().to_str() {
                if note_path(name).is_ok() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete(name: String) -> Result<bool, String> {
        let path = note_path(&name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("delete", &name, e)),
        }
    }
}

export!(Notes);
