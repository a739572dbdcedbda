//! Which directories to watch for a plugins.yaml to change, however it changes.
//!
//! An editor's rename-on-save replaces the file's directory entry (a watch on the file itself
//! would follow the old inode), `git pull` does the same, and git-sync swaps a symlink higher up
//! (`/git/current -> rev-…`), which changes nothing in the directory the file was found in. So
//! plugsync watches, non-recursively, the directory of each file of the desired state (the file
//! and the bases it extends) as named, the directory it resolves to, and the directory holding
//! each symlink on the way — and works out the set again after every change, since a swap moves
//! where the files resolve. An event says only "look again": the file is then read whole, and
//! applied only if what it asks changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// The directories watched for a set of files, kept current with [`FileWatch::follow`].
pub struct FileWatch {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// A watch that sends `wake()` on `to` for every change in a watched directory.
    pub fn new<T: Send + 'static>(
        to: Sender<T>,
        wake: impl Fn() -> T + Send + 'static,
    ) -> notify::Result<FileWatch> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Access events (a file opened or read) change nothing; anything else, and an
            // error of the watch itself (an overflowed queue), means "look again".
            if let Ok(event) = &event
                && event.kind.is_access()
            {
                return;
            }
            let _ = to.send(wake());
        })?;
        Ok(FileWatch {
            watcher,
            watched: BTreeSet::new(),
        })
    }

    /// Watches exactly the directories `files` need now (see the module docs); a directory
    /// that cannot be watched (gone, not yet there) is skipped: the next change looks again.
    pub fn follow(&mut self, files: &[PathBuf]) {
        let wanted: BTreeSet<PathBuf> = files.iter().flat_map(|f| directories_of(f)).collect();
        for gone in self.watched.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for directory in wanted {
            let ok = self.watched.contains(&directory)
                || (self.watcher)
                    .watch(&directory, RecursiveMode::NonRecursive)
                    .map_err(|error| {
                        tracing::debug!("cannot watch `{}`: {error}", directory.display());
                    })
                    .is_ok();
            if ok {
                watched.insert(directory);
            }
        }
        self.watched = watched;
    }

    /// The directories watched now.
    pub fn watched(&self) -> impl Iterator<Item = &Path> {
        self.watched.iter().map(PathBuf::as_path)
    }
}

/// The directories whose changes can change what `file` reads: its own as named, the one it
/// resolves to, and the one holding each symlink on its path.
pub fn directories_of(file: &Path) -> BTreeSet<PathBuf> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let mut directories = BTreeSet::new();
    if let Some(parent) = file.parent() {
        directories.insert(parent.to_owned());
    }
    if let Some(parent) = std::fs::canonicalize(&file)
        .ok()
        .and_then(|real| real.parent().map(Path::to_owned))
    {
        directories.insert(parent);
    }
    let mut prefix = PathBuf::new();
    for component in file.components() {
        prefix.push(component);
        let is_link = std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink());
        if is_link && let Some(parent) = prefix.parent() {
            // The directory the link is in, as it resolves (an earlier link may lead there).
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned());
            directories.insert(parent);
        }
    }
    directories
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_behind_a_git_sync_link_is_watched_where_the_link_swaps() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let revision = root.join("rev-1/hosts/prod");
        std::fs::create_dir_all(&revision).unwrap();
        std::fs::write(revision.join("plugins.yaml"), "").unwrap();
        std::os::unix::fs::symlink(root.join("rev-1"), root.join("current")).unwrap();

        let directories = directories_of(&root.join("current/hosts/prod/plugins.yaml"));

        assert_eq!(
            directories,
            BTreeSet::from([
                root.clone(),
                root.join("current/hosts/prod"),
                root.join("rev-1/hosts/prod"),
            ])
        );
    }

    #[test]
    fn a_plain_file_is_watched_in_its_own_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::write(root.join("plugins.yaml"), "").unwrap();

        assert_eq!(
            directories_of(&root.join("plugins.yaml")),
            BTreeSet::from([root.clone()])
        );
    }

    #[test]
    fn a_file_not_yet_there_is_watched_in_the_directory_it_will_appear_in() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();

        assert_eq!(
            directories_of(&root.join("plugins.yaml")),
            BTreeSet::from([root.clone()])
        );
    }
}
