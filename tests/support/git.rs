//! Commits made with gix (a machine with only the Rust toolchain has no `git`).

/// A commit of `bytes` as `file` (a path in the repository) over HEAD's tree, on HEAD, by an
/// operator at a fixed time; its id. The work tree is not touched: a test writes the file
/// before (an operator's commit) or after (a pull landing).
pub fn commit(repo: &gix::Repository, file: &str, bytes: &[u8], message: &str) -> String {
    let blob = repo.write_blob(bytes).unwrap().detach();
    let parent = repo.head_id().ok().map(|id| id.detach());
    let base = match parent {
        Some(id) => repo.find_commit(id).unwrap().tree_id().unwrap().detach(),
        None => gix::ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = repo.edit_tree(base).unwrap();
    editor
        .upsert(file, gix::object::tree::EntryKind::Blob, blob)
        .unwrap();
    let tree = editor.write().unwrap().detach();
    let operator = gix::actor::SignatureRef {
        name: "ops".into(),
        email: "ops@desk-a.example".into(),
        time: "1796222400 +0000",
    };
    let id = repo
        .commit_as(operator, operator, "HEAD", message, tree, parent)
        .unwrap();
    id.to_string()
}
