//! The probability view: each generated token coloured by how likely the sampler found it, with
//! the alternatives it weighed.

use leptos::prelude::*;

use crate::types::TokenLogprob;

/// Tokens as shown: a character split across tokens (common for accented letters and emoji)
/// is shown once, on one span, with the probability of all its tokens and the first one's
/// alternatives; alone, each piece would be a replacement character.
fn whole_characters(tokens: Vec<TokenLogprob>) -> Vec<TokenLogprob> {
    let mut shown: Vec<TokenLogprob> = Vec::with_capacity(tokens.len());
    let mut open: Option<TokenLogprob> = None;
    for token in tokens {
        let group = match open.take() {
            None => token,
            Some(mut group) => {
                group.bytes.extend_from_slice(&token.bytes);
                group.logprob += token.logprob;
                group
            }
        };
        match std::str::from_utf8(&group.bytes) {
            Ok(text) => shown.push(TokenLogprob {
                token: text.to_string(),
                ..group
            }),
            // An incomplete character at the end waits for the next token's bytes.
            Err(e) if e.error_len().is_none() => open = Some(group),
            Err(_) => shown.push(lossy(group)),
        }
    }
    shown.extend(open.map(lossy));
    shown
}

fn lossy(group: TokenLogprob) -> TokenLogprob {
    TokenLogprob {
        token: String::from_utf8_lossy(&group.bytes).into_owned(),
        ..group
    }
}

/// The reply token by token, each coloured by its probability (green likely, red unlikely), its
/// alternatives shown on hover or focus (tap on a phone).
#[component]
pub fn TokenProbabilities(tokens: Signal<Vec<TokenLogprob>>) -> impl IntoView {
    view! {
        <details class="token-probs" open data-testid="token-probs">
            <summary>"Token probabilities"</summary>
            <p class="tokens">
                {move || whole_characters(tokens.get()).into_iter().map(|t| {
                    let p = f64::from(t.logprob).exp();
                    // Hue from red (0) to green (120) with the probability.
                    let style = format!("background: hsla({:.0}, 70%, 45%, 0.28)", 120.0 * p);
                    let shown = t.token.replace('\n', "↵");
                    view! {
                        <span class="tok" tabindex="0" style=style data-testid="tok" data-p=format!("{p:.4}")>
                            {shown}
                            <span class="alts" role="tooltip">
                                {t.top_logprobs.into_iter().map(|alt| {
                                    let chosen = alt.token == t.token;
                                    view! {
                                        <span class="alt" class:chosen=chosen data-testid="alt">
                                            <code>{format!("{:?}", alt.token)}</code>
                                            {format!(" {:.1}%", 100.0 * f64::from(alt.logprob).exp())}
                                        </span>
                                    }
                                }).collect_view()}
                            </span>
                        </span>
                    }
                }).collect_view()}
            </p>
        </details>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(bytes: &[u8], logprob: f32) -> TokenLogprob {
        TokenLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob,
            bytes: bytes.to_vec(),
            top_logprobs: Vec::new(),
        }
    }

    #[test]
    fn a_character_split_across_tokens_is_shown_once_with_their_joint_probability() {
        let i_circumflex = "Î".as_bytes();
        let shown = whole_characters(vec![
            token(b"l'", -0.1),
            token(&i_circumflex[..1], -0.5),
            token(&i_circumflex[1..], -0.25),
            token(b"le", -0.2),
        ]);
        let texts: Vec<&str> = shown.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(texts, ["l'", "Î", "le"]);
        assert_eq!(shown[1].logprob, -0.75);
        // A reply cut inside a character keeps its bytes, shown as the replacement.
        let cut = whole_characters(vec![token(&i_circumflex[..1], -1.0)]);
        assert_eq!(cut.len(), 1);
    }
}
