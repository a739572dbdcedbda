//! The demo's scratch git repository: the desk's `plugins.yaml` and `plugins.lock`, each change
//! an operator makes committed with a message — made with [`gix`] in this process (a machine
//! with only the Rust toolchain has no `git`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Who the demo's commits are by.
const OPERATOR: (&str, &str) = ("demo operator", "ops@demo-desk.example");

/// A git repository with a work tree, made for the demo.
pub(super) struct Repo {
    repo: gix::Repository,
    dir: PathBuf,
}

impl Repo {
    /// A new repository in `dir` (created), with no commit yet.
    pub fn init(dir: &Path) -> Result<Repo> {
        let repo = gix::init(dir).map_err(|e| git_error("create a repository", e))?;
        Ok(Repo {
            repo,
            dir: dir.to_owned(),
        })
    }

    /// Commits `files` (names in the work tree's root) as they are on disk, over HEAD's tree,
    /// with `message`, on the current branch; the commit's id (hex).
    pub fn commit(&self, files: &[&str], message: &str) -> Result<String> {
        let repo = &self.repo;
        let parent = repo.head_id().ok().map(gix::Id::detach);
        let base = match parent {
            Some(id) => repo
                .find_commit(id)
                .and_then(|c| c.tree_id())
                .map_err(|e| git_error("read HEAD's tree", e))?
                .detach(),
            None => gix::ObjectId::empty_tree(repo.object_hash()),
        };
        let mut editor = repo
            .edit_tree(base)
            .map_err(|e| git_error("edit a tree", e))?;
        for file in files {
            let path = self.dir.join(file);
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                action: "read",
                path,
                source,
            })?;
            let blob = repo
                .write_blob(bytes)
                .map_err(|e| git_error("write a blob", e))?;
            editor
                .upsert(*file, gix::object::tree::EntryKind::Blob, blob.detach())
                .map_err(|e| git_error("edit a tree", e))?;
        }
        let tree = editor
            .write()
            .map_err(|e| git_error("write a tree", e))?
            .detach();
        let time = format!("{} +0000", jiff::Timestamp::now().as_second());
        let operator = gix::actor::SignatureRef {
            name: OPERATOR.0.into(),
            email: OPERATOR.1.into(),
            time: &time,
        };
        let id = repo
            .commit_as(operator, operator, "HEAD", message, tree, parent)
            .map_err(|e| git_error("commit", e))?;
        Ok(id.to_string())
    }
}

fn git_error(action: &'static str, error: impl std::fmt::Display) -> Error {
    Error::DemoGit {
        action,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::provenance::{FileState, Git, of_file};

    #[test]
    fn each_commit_is_what_provenance_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(dir.path()).unwrap();
        let file = dir.path().join("plugins.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let first = repo.commit(&["plugins.yaml"], "first").unwrap();
        let git = of_file(&file);
        assert_eq!(git.commit(), Some(first.as_str()));
        assert!(
            matches!(
                git,
                Git::Repository {
                    state: FileState::Clean,
                    ..
                }
            ),
            "{git:?}"
        );

        std::fs::write(&file, "a: 2\n").unwrap();
        assert!(of_file(&file).dirty());
        let second = repo.commit(&["plugins.yaml"], "second").unwrap();
        assert_ne!(first, second);
        let git = of_file(&file);
        assert_eq!(git.commit(), Some(second.as_str()));
        assert!(!git.dirty());
    }
}
