//! Builds the prompt text from chat messages with the model's own chat template (the Jinja
//! template stored in the GGUF as `tokenizer.chat_template`), rendered by minijinja as
//! Hugging Face transformers does. Base models get plain completion instead.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::EngineError;
use crate::types::{ChatMessage, Role};

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
}

/// How a model turns messages into a prompt.
#[derive(Clone, Debug)]
pub enum PromptFormat {
    /// A chat template (Jinja source) and the special tokens it may refer to.
    Chat {
        template: String,
        bos_token: String,
        eos_token: String,
    },
    /// A base model: the text is continued as written.
    Completion,
}

impl PromptFormat {
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        match self {
            PromptFormat::Chat {
                template,
                bos_token,
                eos_token,
            } => render_chat(template, bos_token, eos_token, messages),
            PromptFormat::Completion => Ok(render_completion(messages)),
        }
    }
}

fn render_chat(
    template: &str,
    bos_token: &str,
    eos_token: &str,
    messages: &[ChatMessage],
) -> Result<String, EngineError> {
    let mut env = Environment::new();
    // Hugging Face templates call Python string methods (`.strip()`, `.startswith()`, ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| EngineError::Template(e.to_string()))?;
    let messages: Vec<TemplateMessage> = messages
        .iter()
        .map(|m| TemplateMessage {
            role: m.role.as_str(),
            content: &m.content,
        })
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => bos_token,
                eos_token => eos_token,
            })
        })
        .map_err(|e| EngineError::Template(e.to_string()))
}

/// Plain completion for base models: the system prompt, then the messages in order.
fn render_completion(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .filter(|m| !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Puts an optional system prompt first, replacing any system message already there.
pub fn with_system_prompt(system: Option<&str>, messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        out.push(ChatMessage {
            role: Role::System,
            content: system.to_string(),
        });
        out.extend(messages.iter().filter(|m| m.role != Role::System).cloned());
    } else {
        out.extend(messages.iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template as stored in its GGUF (ChatML with a default system prompt).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    fn chat(template: &str) -> PromptFormat {
        PromptFormat::Chat {
            template: template.into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    #[test]
    fn chatml_template_renders_with_default_system_and_generation_prompt() {
        let out = chat(SMOLLM2).render(&[msg(Role::User, "Hi")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_system_prompt_replaces_the_default_and_any_earlier_one() {
        let msgs = with_system_prompt(
            Some("Be terse."),
            &[msg(Role::System, "old"), msg(Role::User, "Hi")],
        );
        let out = chat(SMOLLM2).render(&msgs).unwrap();
        assert!(out.starts_with("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi"));
        assert!(!out.contains("old") && !out.contains("SmolLM"));
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}{{ m.content.strip() }}{% endfor %}";
        assert_eq!(chat(t).render(&[msg(Role::User, "  x  ")]).unwrap(), "<s>x");
        let err = chat(t).render(&[msg(Role::System, "s")]).unwrap_err();
        assert!(err.to_string().contains("no system"));
    }

    #[test]
    fn base_models_continue_plain_text() {
        let out = PromptFormat::Completion
            .render(&[msg(Role::User, "Once upon a time")])
            .unwrap();
        assert_eq!(out, "Once upon a time");
    }

    #[test]
    fn user_text_is_not_interpreted_as_template_code() {
        let out = chat(SMOLLM2)
            .render(&[msg(Role::User, "{{ 7*7 }} {% if %}")])
            .unwrap();
        assert!(out.contains("{{ 7*7 }} {% if %}"));
    }
}
