//! Where a plugins.yaml comes from in git: the repository that holds it, the commit checked
//! out there, and whether the file is what that commit says — recorded with every step, so
//! `plugsync history` tells which commit a change was applied from, and whether it was applied
//! from a file no commit holds.
//!
//! An adapter (it reads the file and the repository, with [`gix`]: no `git` executable), with
//! its decisions in pure functions ([`blob_id`], [`compare`], [`path_in`]):
//!
//! 1. **Discover** the repository upwards from the file's directory; none: [`Git::Outside`]
//!    (no provenance, not an error).
//! 2. **HEAD**: the commit checked out (none yet: an unborn branch).
//! 3. **Compare** the file's blob id, computed as git computes it (`blob <len>\0<bytes>`,
//!    hashed with the repository's object format), with the blob at the same path in HEAD's
//!    tree: the same is [`FileState::Clean`]; different [`FileState::Modified`]; absent
//!    [`FileState::Untracked`].
//!
//! A repository that cannot be read is a fact ([`Git::Unreadable`], shown as a warning), never
//! an error: provenance is a record of where the desired state came from, and a reconcile does
//! not depend on it.
//!
//! The comparison is of the bytes on disk: a repository whose `.gitattributes` or
//! `core.autocrlf` filter plugins.yaml on checkout (line endings, LFS) shows it modified.

use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

/// Where one file of the desired state comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileProvenance {
    /// The file, as plugsync was given it (or as `extends` named it).
    pub file: PathBuf,
    /// What git says of it.
    pub git: Git,
}

/// What git says of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Git {
    /// In no git repository.
    Outside,
    /// In a repository that could not be read.
    Unreadable {
        /// Why, in gix's words.
        reason: String,
    },
    /// In a repository's work tree.
    Repository {
        /// The work tree's root.
        workdir: PathBuf,
        /// The file's path in the repository (`/`-separated).
        path: String,
        /// The commit HEAD names (hex); `None` on a branch with no commit yet.
        commit: Option<String>,
        /// The file against that commit.
        state: FileState,
    },
}

/// A file in a work tree, against the commit checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileState {
    /// The blob at its path in HEAD's tree has its exact bytes.
    Clean,
    /// HEAD's tree has another blob (or a directory, a link, a submodule) at its path.
    Modified,
    /// HEAD's tree has nothing at its path (untracked, or added and not yet committed), or
    /// there is no commit yet.
    Untracked,
}

impl Git {
    /// The commit, when the file is in a repository with one.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Git::Repository { commit, .. } => commit.as_deref(),
            _ => None,
        }
    }

    /// Whether the file is not what its commit holds (modified, or untracked).
    pub fn dirty(&self) -> bool {
        matches!(
            self,
            Git::Repository {
                state: FileState::Modified | FileState::Untracked,
                ..
            }
        )
    }
}

/// What HEAD's tree holds at a file's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InHead {
    /// No commit yet (an unborn branch).
    NoCommit,
    /// Nothing at that path.
    Absent,
    /// A blob (a regular or executable file).
    Blob(ObjectId),
    /// Something else: a directory, a symbolic link, a submodule.
    Other,
}

/// The file's state from its blob id and what HEAD holds at its path (pure).
pub fn compare(working: ObjectId, in_head: InHead) -> FileState {
    match in_head {
        InHead::NoCommit | InHead::Absent => FileState::Untracked,
        InHead::Blob(committed) if committed == working => FileState::Clean,
        InHead::Blob(_) | InHead::Other => FileState::Modified,
    }
}

/// The id git gives `bytes` as a blob in a repository of object format `kind` (pure): the hash
/// of `blob <len>\0` and the bytes.
pub fn blob_id(kind: gix::hash::Kind, bytes: &[u8]) -> Result<ObjectId, String> {
    gix::objs::compute_hash(kind, gix::object::Kind::Blob, bytes).map_err(|e| e.to_string())
}

/// `file`'s path under `workdir`, `/`-separated, when it is under it (pure; both paths
/// canonical).
pub fn path_in(workdir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(workdir).ok()?;
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The provenance of each file (in the order given: the file named, then each it extends).
pub fn of_files(files: &[PathBuf]) -> Vec<FileProvenance> {
    files
        .iter()
        .map(|file| FileProvenance {
            file: file.clone(),
            git: of_file(file),
        })
        .collect()
}

/// What git says of `file` (see the module docs).
pub fn of_file(file: &Path) -> Git {
    let unreadable = |reason: String| Git::Unreadable { reason };
    let file = match file.canonicalize() {
        Ok(file) => file,
        Err(error) => return unreadable(format!("cannot resolve `{}`: {error}", file.display())),
    };
    let Some(dir) = file.parent() else {
        return Git::Outside;
    };
    // Discovered first on its own: "no repository" is a fact, any other failure a warning.
    if let Err(error) = gix::discover::upwards(dir) {
        use gix::discover::upwards::Error as Upwards;
        let outside = matches!(
            error.downcast_any_ref::<Upwards>(),
            Some(
                Upwards::NoGitRepository { .. }
                    | Upwards::NoGitRepositoryWithinCeiling { .. }
                    | Upwards::NoGitRepositoryWithinFs { .. }
            )
        );
        return match outside {
            true => Git::Outside,
            false => unreadable(error.to_string()),
        };
    }
    match in_repository(dir, &file) {
        Ok(git) => git,
        Err(reason) => unreadable(reason),
    }
}

/// Opens the repository above `dir` and compares `file` (canonical) with HEAD.
fn in_repository(dir: &Path, file: &Path) -> Result<Git, String> {
    let repo = gix::discover(dir).map_err(|e| e.to_string())?;
    // A bare repository has no work tree for a file to be in.
    let Some(workdir) = repo.workdir() else {
        return Ok(Git::Outside);
    };
    let workdir = workdir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the work tree `{}`: {e}", workdir.display()))?;
    let Some(path) = path_in(&workdir, file) else {
        return Ok(Git::Outside);
    };
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let working = blob_id(repo.object_hash(), &bytes)?;
    let head = repo.head().map_err(|e| format!("cannot read HEAD: {e}"))?;
    let (commit, in_head) = match head.id() {
        None => (None, InHead::NoCommit),
        Some(id) => {
            let commit = repo
                .find_commit(id)
                .map_err(|e| format!("cannot read HEAD's commit {id}: {e}"))?;
            let tree = commit
                .tree()
                .map_err(|e| format!("cannot read the tree of {id}: {e}"))?;
            let entry = tree
                .lookup_entry_by_path(&path)
                .map_err(|e| format!("cannot read `{path}` in {id}: {e}"))?;
            let in_head = match entry {
                None => InHead::Absent,
                Some(entry) if entry.mode().is_blob() => InHead::Blob(entry.object_id()),
                Some(_) => InHead::Other,
            };
            (Some(id.to_string()), in_head)
        }
    };
    Ok(Git::Repository {
        workdir,
        path,
        commit,
        state: compare(working, in_head),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).expect("hex")
    }

    #[test]
    fn blob_ids_are_gits() {
        // `git hash-object` of each.
        let cases: [(&[u8], &str); 3] = [
            (b"", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"),
            (b"hello\n", "ce013625030ba8dba906f756967f9e9ca394464a"),
            (
                b"apiVersion: plugsync/v1\n",
                "c1f2c1314a84e3be2ce299514696e79857bbe82e",
            ),
        ];
        for (bytes, expected) in cases {
            let got = blob_id(gix::hash::Kind::Sha1, bytes).expect("sha1 is built in");
            assert_eq!(
                got.to_string(),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn the_file_is_compared_with_what_head_holds_at_its_path() {
        let a = id("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        let b = id("ce013625030ba8dba906f756967f9e9ca394464a");
        let cases = [
            (InHead::Blob(a), FileState::Clean),
            (InHead::Blob(b), FileState::Modified),
            (InHead::Other, FileState::Modified),
            (InHead::Absent, FileState::Untracked),
            (InHead::NoCommit, FileState::Untracked),
        ];
        for (in_head, expected) in cases {
            assert_eq!(compare(a, in_head), expected, "{in_head:?}");
        }
    }

    #[test]
    fn a_path_in_a_work_tree_is_slash_separated_and_never_the_root() {
        let cases = [
            ("/r", "/r/plugins.yaml", Some("plugins.yaml")),
            (
                "/r",
                "/r/hosts/prod/plugins.yaml",
                Some("hosts/prod/plugins.yaml"),
            ),
            ("/r", "/elsewhere/plugins.yaml", None),
            ("/r", "/rr/plugins.yaml", None),
            ("/r", "/r", None),
        ];
        for (workdir, file, expected) in cases {
            assert_eq!(
                path_in(Path::new(workdir), Path::new(file)).as_deref(),
                expected,
                "{file} in {workdir}"
            );
        }
    }

    #[test]
    fn dirty_is_modified_or_untracked_and_only_in_a_repository() {
        let repo = |state| Git::Repository {
            workdir: PathBuf::from("/r"),
            path: "plugins.yaml".to_owned(),
            commit: Some("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391".to_owned()),
            state,
        };
        let cases = [
            (repo(FileState::Clean), false),
            (repo(FileState::Modified), true),
            (repo(FileState::Untracked), true),
            (Git::Outside, false),
            (
                Git::Unreadable {
                    reason: "x".to_owned(),
                },
                false,
            ),
        ];
        for (git, dirty) in cases {
            assert_eq!(git.dirty(), dirty, "{git:?}");
        }
    }
}
