//! Who may talk to the control API: named clients, each with its own bearer token, read from a
//! file only its owner can read. (Who can reach it at all is the transport's part:
//! `transport::check_listen`.)
//!
//! The token file has one of two formats, told apart by its lines (blank lines and lines whose
//! first non-blank character is `#` aside; the fields of a line are separated by whitespace):
//!
//! - **a single token**: one line of one field, the token; its client is named
//!   [`Client::DEFAULT`] (`default`). Every token file written before clients had names is one.
//! - **named clients**: every line is `name token`, two fields. A name is 1 to 64 of `a-z`,
//!   `0-9`, `_`, `.`, `-`, starting with a letter or a digit; no two lines share a name or a
//!   token.
//!
//! A line of one field among other lines, a line of three fields or more, a name that is not
//! valid, a name given twice and a token given twice are refused with the file and the line. No
//! message carries a token, nor a field that is not a valid name (it may be a token written in
//! the wrong column).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;

use super::ControlError;

/// The client a request authenticated as: the name its token has in the host's token file.
///
/// The server puts it in every authenticated request's extensions, where a handler reads it
/// (axum's `Extension<Client>`), and in the host's log line of every mutating request (field
/// `client`). The reconcile lease's `owner` (and a break's `by`) is this name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client {
    /// The client's name: `[a-z0-9][a-z0-9_.-]{0,63}`.
    pub name: String,
}

impl Client {
    /// The name of the client of a token file holding a single token.
    pub const DEFAULT: &'static str = "default";

    /// `given`, the name a request body gives in `field`, confirmed to be this client's; absent,
    /// this client's name. A client acts on the reconcile lease in its own name only.
    pub(crate) fn confirm<'a>(
        &'a self,
        field: &'static str,
        given: Option<&str>,
    ) -> Result<&'a str, ClientRefused> {
        match given {
            Some(given) if given != self.name => Err(ClientRefused::NotThisClient {
                field,
                given: given.to_owned(),
                client: self.name.clone(),
            }),
            _ => Ok(&self.name),
        }
    }
}

/// Why an authenticated client's request was refused (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientRefused {
    /// The body names another client than the one the request authenticated as.
    #[error(
        "`{field}` is `{given}`, but this request carries the token of client `{client}`: a \
         client acts on the reconcile lease in its own name only; leave `{field}` out (it is \
         the name of the client whose token the request carries), or send `{given}`'s own token"
    )]
    NotThisClient {
        /// The body's field (`owner`, `by`).
        field: &'static str,
        /// The name it gives.
        given: String,
        /// The client the request authenticated as.
        client: String,
    },
}

impl ClientRefused {
    /// The stable code of the error response.
    pub fn code(&self) -> &'static str {
        match self {
            ClientRefused::NotThisClient { .. } => "not_this_client",
        }
    }
}

/// Every client of the host and its bearer token.
pub(crate) struct Clients(Vec<(Client, Vec<u8>)>);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(client, _)| &client.name))
            .finish()
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header, or not a bearer token.
    Missing,
    /// A bearer token, not one of the clients'.
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

/// Whether `name` is a valid client name: `[a-z0-9][a-z0-9_.-]{0,63}`.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= 64
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(b))
}

/// A line of the token file that holds a client: its number (from 1), its name (none: a lone
/// token) and its token.
struct Line<'a> {
    number: usize,
    name: Option<&'a str>,
    token: &'a str,
}

impl Clients {
    /// No client: every token is refused (the in-process API names its client instead).
    pub(crate) fn none() -> Clients {
        Clients(Vec::new())
    }

    /// Reads the clients from `path`, which must be a regular file with no permission for group
    /// or others (checked on the opened file, so it cannot change in between), in either format
    /// of the module docs.
    pub fn read(path: &Path) -> Result<Clients, ControlError> {
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
        Clients::parse(path, &text)
    }

    /// The clients of a token file's text (`path` only names it in errors).
    fn parse(path: &Path, text: &str) -> Result<Clients, ControlError> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [token] => lines.push(Line {
                    number,
                    name: None,
                    token,
                }),
                [name, token] => lines.push(Line {
                    number,
                    name: Some(name),
                    token,
                }),
                _ => {
                    return Err(ControlError::TokenFileMalformedLine {
                        path: path.to_owned(),
                        line: number,
                        fields: fields.len(),
                    });
                }
            }
        }
        // The single-token format: one line, only a token.
        if let [only] = &lines[..]
            && only.name.is_none()
        {
            let client = Client {
                name: Client::DEFAULT.to_owned(),
            };
            return Ok(Clients(vec![(client, only.token.as_bytes().to_vec())]));
        }
        if lines.is_empty() {
            return Err(ControlError::TokenFileEmpty {
                path: path.to_owned(),
            });
        }
        let mut clients: Vec<(Client, Vec<u8>)> = Vec::with_capacity(lines.len());
        let mut numbers: Vec<usize> = Vec::with_capacity(lines.len());
        for line in &lines {
            let path = || path.to_owned();
            let Some(name) = line.name else {
                return Err(ControlError::TokenFileLoneToken {
                    path: path(),
                    line: line.number,
                });
            };
            if !valid_name(name) {
                return Err(ControlError::TokenFileBadName {
                    path: path(),
                    line: line.number,
                });
            }
            let token = line.token.as_bytes();
            for ((other, other_token), &other_line) in clients.iter().zip(&numbers) {
                if other.name == name {
                    return Err(ControlError::TokenFileDuplicateName {
                        path: path(),
                        line: line.number,
                        name: name.to_owned(),
                        first_line: other_line,
                    });
                }
                if other_token == token {
                    return Err(ControlError::TokenFileDuplicateToken {
                        path: path(),
                        line: line.number,
                        name: name.to_owned(),
                        other: other.name.clone(),
                        other_line,
                    });
                }
            }
            let client = Client {
                name: name.to_owned(),
            };
            clients.push((client, token.to_vec()));
            numbers.push(line.number);
        }
        Ok(Clients(clients))
    }

    /// The names of the clients, in the file's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(client, _)| client.name.as_str())
    }

    /// Checks an `Authorization` header value: `Bearer <token>` (the scheme in any case),
    /// compared in constant time with every client's token (every one, whichever matches), and
    /// answers the client whose token it is.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<&Client, Denied> {
        let value = authorization.ok_or(Denied::Missing)?;
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Err(Denied::Missing);
        }
        let given = value[scheme.len()..].trim_ascii();
        let mut found = None;
        for (client, token) in &self.0 {
            // No early exit: the time taken does not say how many tokens were tried.
            if bool::from(given.ct_eq(token)) {
                found = Some(client);
            }
        }
        found.ok_or(Denied::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Clients, String> {
        Clients::parse(Path::new("/etc/host/tokens"), text).map_err(|e| e.to_string())
    }

    fn names(text: &str) -> Vec<String> {
        let clients = parse(text).unwrap();
        clients.names().map(str::to_owned).collect()
    }

    #[test]
    fn bearer_tokens_are_checked() {
        type Case = (Option<&'static [u8]>, Result<&'static str, Denied>);
        let clients = parse("s3cret\n").unwrap();
        let cases: [Case; 7] = [
            (Some(b"Bearer s3cret"), Ok("default")),
            (Some(b"bearer s3cret "), Ok("default")),
            (Some(b"Bearer s3cre"), Err(Denied::Wrong)),
            (Some(b"Bearer s3cret2"), Err(Denied::Wrong)),
            (Some(b"Basic czNjcmV0"), Err(Denied::Missing)),
            (Some(b"s3cret"), Err(Denied::Missing)),
            (None, Err(Denied::Missing)),
        ];
        for (header, expected) in cases {
            let checked = clients.check(header).map(|c| c.name.as_str());
            assert_eq!(checked, expected, "{header:?}");
        }
    }

    #[test]
    fn each_token_authenticates_its_own_client() {
        let clients = parse("# who drives this host\nsidecar s1\n\n  laptop\tl2  \n").unwrap();
        let name = |header: &[u8]| clients.check(Some(header)).map(|c| c.name.clone());
        assert_eq!(name(b"Bearer s1"), Ok("sidecar".into()));
        assert_eq!(name(b"Bearer l2"), Ok("laptop".into()));
        assert_eq!(name(b"Bearer sidecar"), Err(Denied::Wrong));
        assert_eq!(name(b"Bearer sidecar s1"), Err(Denied::Wrong));
    }

    #[test]
    fn the_two_formats_are_told_apart_by_their_lines() {
        // One line of one field: the single-token format, whatever comments surround it.
        assert_eq!(names("s3cret"), ["default"]);
        assert_eq!(names("# the host's token\n\n  s3cret  \n\n"), ["default"]);
        // Lines of two fields: named clients, even only one.
        assert_eq!(names("ci c1"), ["ci"]);
        assert_eq!(names("default d1\nci c1\n"), ["default", "ci"]);
        let longest = "a".repeat(64);
        assert_eq!(
            names(&format!("{longest} t\n0.b_c-d u\n")),
            [&longest, "0.b_c-d"]
        );
    }

    #[test]
    fn a_bad_line_is_refused_naming_the_file_and_the_line() {
        for (text, expected) in [
            (
                "sidecar s1\nlaptop l2 extra\n",
                "token file `/etc/host/tokens:2` has 3 fields: write one client per line as \
                 `name token` (or, alone in the file, only a token: its client is named \
                 `default`)",
            ),
            (
                "sidecar s1\n# the old token:\nl2\n",
                "token file `/etc/host/tokens:3` holds only a token, but the file has other \
                 lines: write `name token` on every line (a file whose only line is a token is \
                 read as the token of client `default`)",
            ),
            (
                "s3cret\nlaptop l2\n",
                "token file `/etc/host/tokens:1` holds only a token, but the file has other \
                 lines: write `name token` on every line (a file whose only line is a token is \
                 read as the token of client `default`)",
            ),
            (
                "sidecar s1\nLaptop l2\n",
                "token file `/etc/host/tokens:2` names a client with a name that is not valid: \
                 a name is 1 to 64 of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter or a \
                 digit, and comes before the token",
            ),
            (
                &format!("{} t\n", "a".repeat(65)),
                "token file `/etc/host/tokens:1` names a client with a name that is not valid: \
                 a name is 1 to 64 of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter or a \
                 digit, and comes before the token",
            ),
            (
                "_ci t\n",
                "token file `/etc/host/tokens:1` names a client with a name that is not valid: \
                 a name is 1 to 64 of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter or a \
                 digit, and comes before the token",
            ),
            (
                "sidecar s1\nlaptop l2\n\nsidecar s3\n",
                "token file `/etc/host/tokens:4` names client `sidecar` again (first on line \
                 1): give each client one line, with its own name",
            ),
            (
                "sidecar s1\nlaptop l2\nci s1\n",
                "token file `/etc/host/tokens:3` gives client `ci` the token of client \
                 `sidecar` (line 1): two clients must never share a token; give each its own, \
                 e.g. `head -c 32 /dev/urandom | base64`",
            ),
            (
                "# no one yet\n\n",
                "token file `/etc/host/tokens` is empty: write a random token into it, e.g. \
                 `head -c 32 /dev/urandom | base64 > /etc/host/tokens`",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), expected, "{text:?}");
        }
    }

    #[test]
    fn no_message_or_debug_output_carries_a_token() {
        let clients = parse("sidecar s3cret-1\nlaptop s3cret-2\n").unwrap();
        assert_eq!(format!("{clients:?}"), r#"["sidecar", "laptop"]"#);
        for text in [
            "sidecar s3cret-1 s3cret-2\n",
            "sidecar s3cret-1\ns3cret-2\n",
            "S3CRET-2 sidecar\n",
            "sidecar s3cret-1\nlaptop s3cret-1\n",
        ] {
            let message = parse(text).unwrap_err();
            assert!(!message.contains("s3cret"), "{message}");
            assert!(!message.contains("S3CRET"), "{message}");
        }
    }

    #[test]
    fn a_body_may_name_only_its_own_client() {
        let laptop = Client {
            name: "laptop".into(),
        };
        assert_eq!(laptop.confirm("owner", None), Ok("laptop"));
        assert_eq!(laptop.confirm("owner", Some("laptop")), Ok("laptop"));
        let refused = laptop.confirm("by", Some("sidecar")).unwrap_err();
        assert_eq!(refused.code(), "not_this_client");
        assert_eq!(
            refused.to_string(),
            "`by` is `sidecar`, but this request carries the token of client `laptop`: a client \
             acts on the reconcile lease in its own name only; leave `by` out (it is the name of \
             the client whose token the request carries), or send `sidecar`'s own token"
        );
    }
}
