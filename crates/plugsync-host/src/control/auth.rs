//! Who may talk to the control API: a bearer token read from a file only its owner can read.
//! (Who can reach it at all is the transport's part: `transport::check_listen`.)

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;

use super::ControlError;

/// The bearer token every request must carry.
pub(crate) struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header, or not a bearer token.
    Missing,
    /// A bearer token, not the right one.
    Wrong,
}

impl Denied {
    /// What the client is told (never the token, nor where it is kept).
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => {
                "missing bearer token: send `Authorization: Bearer <token>` with the token from \
                 the host's token file"
            }
            Denied::Wrong => {
                "wrong bearer token: send the token from the host's token file (it is read when \
                 the host starts)"
            }
        }
    }
}

impl Token {
    /// Reads the token from `path`, which must be a regular file with no permission for group
    /// or others (checked on the opened file, so it cannot change in between). Surrounding
    /// whitespace is not part of the token.
    pub fn read(path: &Path) -> Result<Token, ControlError> {
        let mut file = std::fs::File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ControlError::TokenFileMissing {
                    path: path.to_owned(),
                }
            } else {
                ControlError::TokenFileUnreadable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let unreadable = |source| ControlError::TokenFileUnreadable {
            path: path.to_owned(),
            source,
        };
        let metadata = file.metadata().map_err(unreadable)?;
        if !metadata.is_file() {
            return Err(ControlError::TokenFileNotRegular {
                path: path.to_owned(),
            });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ControlError::TokenFileTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(unreadable)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ControlError::TokenFileEmpty {
                path: path.to_owned(),
            });
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// Checks an `Authorization` header value: `Bearer <token>` (the scheme in any case),
    /// compared in constant time.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let value = authorization.ok_or(Denied::Missing)?;
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Err(Denied::Missing);
        }
        let given = value[scheme.len()..].trim_ascii();
        if bool::from(given.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        type Case = (Option<&'static [u8]>, Result<(), Denied>);
        let token = Token(b"s3cret".to_vec());
        let cases: [Case; 7] = [
            (Some(b"Bearer s3cret"), Ok(())),
            (Some(b"bearer s3cret "), Ok(())),
            (Some(b"Bearer s3cre"), Err(Denied::Wrong)),
            (Some(b"Bearer s3cret2"), Err(Denied::Wrong)),
            (Some(b"Basic czNjcmV0"), Err(Denied::Missing)),
            (Some(b"s3cret"), Err(Denied::Missing)),
            (None, Err(Denied::Missing)),
        ];
        for (header, expected) in cases {
            assert_eq!(token.check(header), expected, "{header:?}");
        }
    }
}
