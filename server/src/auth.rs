//! The bearer token: `.cairn/serve.token`, written on first start (mode
//! 0600, 32 random bytes as 64 hex characters and a newline), and the
//! check every `/v1` request passes (docs/api.md, "Authentication").

use std::io::Write;
use std::path::Path;

use crate::ServeError;

/// The token's file name, in the store directory.
pub const TOKEN_FILE: &str = "serve.token";

/// The token of the store at `store_dir`: read, or created (with the store
/// directory) if there is none yet.
pub fn load_or_create(store_dir: &Path) -> Result<String, ServeError> {
    let path = store_dir.join(TOKEN_FILE);
    let token_error = |source| ServeError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() != 64 || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return Err(ServeError::BadToken {
                    path,
                    message: "not a token (64 hex characters); delete the file and restart \
                              `cairn serve` to make a new one"
                        .to_owned(),
                });
            }
            check_private(&path)?;
            return Ok(token.to_owned());
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(token_error(error)),
    }
    std::fs::create_dir_all(store_dir).map_err(|source| ServeError::Token {
        path: store_dir.to_owned(),
        source,
    })?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| token_error(std::io::Error::other(error)))?;
    let token = hex(&bytes);
    // Created with 0600 from the start: never readable by others, not even
    // for a moment. `create_new`: two servers starting at once do not
    // overwrite each other's token (the second reads the first's).
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(token_error)?;
            Ok(token)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            load_or_create(store_dir)
        }
        Err(error) => Err(token_error(error)),
    }
}

/// A token file others can read is refused: anyone who can read it can
/// build and invalidate.
fn check_private(path: &Path) -> Result<(), ServeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path).map_err(|source| ServeError::Token {
            path: path.to_owned(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ServeError::BadToken {
                path: path.to_owned(),
                message: format!(
                    "mode {mode:o}: others can read the token; `chmod 600` it (or delete it to make a new one)"
                ),
            });
        }
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Whether `header` (the `Authorization` value) carries `token`, compared
/// in time independent of where they differ.
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
        return false;
    };
    let given = given.trim().as_bytes();
    let token = token.as_bytes();
    if given.len() != token.len() {
        return false;
    }
    given
        .iter()
        .zip(token)
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

/// A random operation id: `op-` and 12 hex characters.
pub fn operation_id() -> String {
    let mut bytes = [0u8; 6];
    // The system's random source failing is not something to go on from.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    format!("op-{}", hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_read_back() {
        let dir = tempfile_dir();
        let store = dir.join(".cairn");
        let token = load_or_create(&store).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|byte| byte.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create(&store).unwrap(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                store.join(TOKEN_FILE),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let error = load_or_create(&store).unwrap_err().to_string();
            assert!(error.contains("others can read the token"), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = "ab".repeat(32);
        assert!(authorized(Some(&format!("Bearer {token}")), &token));
        assert!(!authorized(None, &token));
        assert!(!authorized(Some(&token), &token));
        assert!(!authorized(
            Some(&format!("Bearer {}", "ac".repeat(32))),
            &token
        ));
        assert!(!authorized(Some(&format!("Bearer {token}0")), &token));
        assert!(!authorized(Some("Bearer "), &token));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-serve-auth-{}", operation_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
