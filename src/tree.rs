//! A conversation as a tree: editing a question or regenerating an answer adds a sibling
//! instead of overwriting, and the chat shows one path from a first message to a leaf.
//!
//! Every message names its parent (`StoredMessage::parent_id`): another message's id, or
//! [`ROOT_PARENT`] for a first message. Messages saved before branches existed carry no parent
//! and follow the message stored before them, so old conversations read as the line they were.
//! Messages are stored in the order they were added, so a parent always comes before its
//! children and the newest message is always a leaf.

use crate::types::StoredMessage;

/// The parent of a first message (the nil UUID): a conversation may have several first messages
/// when its opening question was edited.
pub const ROOT_PARENT: &str = "00000000-0000-0000-0000-000000000000";

/// Each message's parent as an index into the same list (`None` for a first message). A parent
/// that is missing, unknown, or not stored before the message (legacy data, a hand-written
/// import) falls back to the message stored just before it.
pub fn parent_indices(messages: &[StoredMessage]) -> Vec<Option<usize>> {
    let mut seen = std::collections::HashMap::with_capacity(messages.len());
    let mut parents = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let previous = i.checked_sub(1);
        let parent = match message.parent_id.as_deref() {
            Some(ROOT_PARENT) => None,
            Some(id) => seen.get(id).copied().or(previous),
            None => previous,
        };
        parents.push(parent);
        seen.insert(message.id.as_str(), i);
    }
    parents
}

/// The messages from a first message down to `leaf`, in reading order.
pub fn path_to(parents: &[Option<usize>], leaf: usize) -> Vec<usize> {
    let mut path = Vec::new();
    let mut node = Some(leaf).filter(|&n| n < parents.len());
    while let Some(n) = node {
        path.push(n);
        // Parents come first in storage; a cycle would need a later parent, so this ends.
        node = parents[n].filter(|&p| p < n);
    }
    path.reverse();
    path
}

/// Messages that share `node`'s parent (itself included), oldest first.
pub fn siblings(parents: &[Option<usize>], node: usize) -> Vec<usize> {
    let Some(&parent) = parents.get(node) else {
        return Vec::new();
    };
    (0..parents.len())
        .filter(|&i| parents[i] == parent)
        .collect()
}

/// The newest message in `node`'s subtree: where the chat goes when a person switches to
/// `node`, so they see that branch as they last left it.
pub fn newest_under(parents: &[Option<usize>], node: usize) -> usize {
    (node..parents.len())
        .rev()
        .find(|&i| path_to(parents, i).contains(&node))
        .unwrap_or(node)
}

/// The path shown when a conversation opens: the one that ends at the newest message.
pub fn latest_path(messages: &[StoredMessage]) -> Vec<usize> {
    let parents = parent_indices(messages);
    match parents.len().checked_sub(1) {
        Some(last) => path_to(&parents, last),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Role;

    fn message(id: &str, parent: Option<&str>) -> StoredMessage {
        StoredMessage {
            id: id.into(),
            parent_id: parent.map(Into::into),
            role: Role::User,
            content: id.into(),
            created_at_ms: 0,
            model: None,
            engine: None,
            sampling: None,
            metrics: None,
            interrupted: false,
        }
    }

    #[test]
    fn messages_without_parents_read_as_the_line_they_were_saved_in() {
        let legacy = [message("a", None), message("b", None), message("c", None)];
        assert_eq!(parent_indices(&legacy), [None, Some(0), Some(1)]);
        assert_eq!(latest_path(&legacy), [0, 1, 2]);
    }

    #[test]
    fn an_edited_question_and_a_regenerated_answer_are_siblings_and_the_newest_branch_shows() {
        let tree = [
            message("q1", Some(ROOT_PARENT)),
            message("a1", Some("q1")),
            message("a1-again", Some("q1")),
            message("q1-edited", Some(ROOT_PARENT)),
            message("a2", Some("q1-edited")),
            // Added to the first branch after the edit: that branch is now the newest.
            message("q3", Some("a1")),
        ];
        let parents = parent_indices(&tree);
        assert_eq!(siblings(&parents, 0), [0, 3]);
        assert_eq!(siblings(&parents, 2), [1, 2]);
        assert_eq!(latest_path(&tree), [0, 1, 5]);
        assert_eq!(newest_under(&parents, 3), 4);
        assert_eq!(newest_under(&parents, 2), 2);
        assert_eq!(path_to(&parents, 4), [3, 4]);
    }

    #[test]
    fn unknown_or_later_parents_fall_back_to_the_message_before() {
        let odd = [
            message("a", Some(ROOT_PARENT)),
            message("b", Some("nowhere")),
            message("c", Some("d")),
            message("d", Some("c")),
        ];
        assert_eq!(parent_indices(&odd), [None, Some(0), Some(1), Some(2)]);
        assert_eq!(path_to(&parent_indices(&odd), 3), [0, 1, 2, 3]);
    }
}
