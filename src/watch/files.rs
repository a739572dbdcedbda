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

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError, RwLock};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// The directories watched for a set of files, kept current with [`FileWatch::follow`].
pub struct FileWatch {
    watcher: RecommendedWatcher,
    /// Each directory watched, and which directory it was when watched (device, inode): a
    /// directory replaced at the same path drops the kernel's watch with the old one.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
    /// The paths whose change matters (each file as named and as it resolves): an event on
    /// one of them or on a directory above one wakes the loop, any other (an editor's swap
    /// file, a log beside plugins.yaml) does not.
    targets: Arc<RwLock<Vec<PathBuf>>>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// A watch that sends `wake()` on `to` for every change that may change the files.
    pub fn new<T: Send + 'static>(
        to: Sender<T>,
        wake: impl Fn() -> T + Send + 'static,
    ) -> notify::Result<FileWatch> {
        let targets: Arc<RwLock<Vec<PathBuf>>> = Arc::default();
        let seen = Arc::clone(&targets);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let matters = match &event {
                // An error of the watch itself (an overflowed queue): look again.
                Err(_) => true,
                Ok(event) if event.need_rescan() || event.paths.is_empty() => true,
                // Reading a file changes nothing.
                Ok(event) if event.kind.is_access() => false,
                Ok(event) => {
                    let targets = seen.read().unwrap_or_else(PoisonError::into_inner);
                    (event.paths.iter())
                        .any(|path| targets.iter().any(|target| target.starts_with(path)))
                }
            };
            if matters {
                let _ = to.send(wake());
            }
        })?;
        Ok(FileWatch {
            watcher,
            watched: BTreeMap::new(),
            targets,
        })
    }

    /// Watches exactly the directories `files` need now (see the module docs), each watched
    /// again if it was replaced since; a directory not there yet is watched through the
    /// nearest one above it that is.
    pub fn follow(&mut self, files: &[PathBuf]) {
        let mut targets = Vec::new();
        for file in files {
            let named = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            if let Ok(real) = std::fs::canonicalize(&named) {
                targets.push(real);
            }
            targets.push(named);
        }
        *self.targets.write().unwrap_or_else(PoisonError::into_inner) = targets;

        let wanted: BTreeSet<PathBuf> = files.iter().flat_map(|f| directories_of(f)).collect();
        let gone: Vec<PathBuf> = (self.watched.keys())
            .filter(|directory| !wanted.contains(*directory))
            .cloned()
            .collect();
        for directory in gone {
            let _ = self.watcher.unwatch(&directory);
            self.watched.remove(&directory);
        }
        for directory in wanted {
            let identity = identity(&directory);
            match self.watched.get(&directory) {
                Some(watched) if *watched == identity && identity.is_some() => continue,
                Some(_) => {
                    let _ = self.watcher.unwatch(&directory);
                }
                None => {}
            }
            match (self.watcher).watch(&directory, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(directory, identity);
                }
                Err(error) => {
                    // Gone between the look and the watch: the next change looks again.
                    tracing::debug!("cannot watch `{}`: {error}", directory.display());
                    self.watched.remove(&directory);
                }
            }
        }
    }

    /// The directories watched now.
    pub fn watched(&self) -> impl Iterator<Item = &Path> {
        self.watched.keys().map(PathBuf::as_path)
    }
}

/// Which directory is at `path` now (device, inode), if one is.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The nearest directory at or above `path` that exists (`/` at worst).
fn existing(path: &Path) -> PathBuf {
    let mut at = path;
    loop {
        if at.is_dir() {
            return at.to_owned();
        }
        match at.parent() {
            Some(parent) => at = parent,
            None => return at.to_owned(),
        }
    }
}

/// The directories whose changes can change what `file` reads: its own as named, the one it
/// resolves to, and the one holding each symlink on its path — each, if not there yet, by the
/// nearest directory above it that is (its creation is a change there).
pub fn directories_of(file: &Path) -> BTreeSet<PathBuf> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let mut directories = BTreeSet::new();
    if let Some(parent) = file.parent() {
        directories.insert(existing(parent));
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
    fn a_file_whose_directories_are_not_there_yet_is_watched_from_the_nearest_one_that_is() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();

        // As before git-sync's first sync: `/git/current` does not exist yet.
        assert_eq!(
            directories_of(&root.join("current/hosts/prod/plugins.yaml")),
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
