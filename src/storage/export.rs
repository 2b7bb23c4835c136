//! Exporting a conversation as JSON (lossless, re-importable, every branch) or Markdown (for
//! reading: the branch the chat shows when the conversation opens).

use crate::{
    tree,
    types::{Conversation, Role},
};

pub fn to_json(conversation: &Conversation) -> String {
    serde_json::to_string_pretty(conversation).unwrap_or_else(|_| "{}".to_string())
}

pub fn to_markdown(conversation: &Conversation) -> String {
    let mut out = format!("# {}\n\n", conversation.title);
    let path = tree::latest_path(&conversation.messages);
    let other = conversation.messages.len() - path.len();
    if other > 0 {
        out.push_str(&format!(
            "_The latest branch; {other} message(s) on other branches are in the JSON export._\n\n"
        ));
    }
    for message in path.iter().map(|&i| &conversation.messages[i]) {
        let who = match message.role {
            Role::System => "System".to_string(),
            Role::User => "User".to_string(),
            Role::Assistant => match &message.model {
                Some(model) => format!("Assistant ({model})"),
                None => "Assistant".to_string(),
            },
        };
        out.push_str(&format!("## {who}\n\n{}\n\n", message.content));
        if message.interrupted {
            out.push_str("_(reply interrupted)_\n\n");
        }
        if let Some(m) = &message.metrics {
            out.push_str(&format!(
                "_TTFT {:.0} ms · {} tokens · {:.1} tok/s · seed {}_\n\n",
                m.time_to_first_token_ms, m.generated_tokens, m.decode_tokens_per_s, m.seed
            ));
        }
    }
    out
}
