//! The event types the engine counts natively. Any other type is allowed and counted
//! by name; these eight get a fixed slot so the per-event path never hashes a string.

/// The known event types, in slot order.
pub const KNOWN: [&str; 8] = [
    "conversation.started",
    "message.customer",
    "message.ai",
    "tool.called",
    "llm.call",
    "escalated",
    "resolution.confirmed",
    "conversation.closed",
];

pub const CONVERSATION_STARTED: u8 = 0;
pub const TOOL_CALLED: u8 = 3;
pub const LLM_CALL: u8 = 4;

/// An event type: a known slot, or `OTHER` with the name kept beside it.
pub type Kind = u8;
pub const OTHER: Kind = u8::MAX;

/// The slot of a type name, or [`OTHER`].
#[inline]
pub fn classify(name: &str) -> Kind {
    // Compared inline, lengths first: cheaper than hashing, and the lengths differ often.
    KNOWN.iter().position(|k| crate::bytes::same(k.as_bytes(), name.as_bytes())).map_or(OTHER, |i| i as Kind)
}

/// Whether `cost_usd` of this type counts toward a conversation's cost (SPEC section 5).
#[inline]
pub fn carries_cost(kind: Kind) -> bool {
    kind == LLM_CALL || kind == TOOL_CALLED
}

/// The rule handler a type dispatches to: `on_` then the type with every character that
/// cannot appear in a Rhai name turned into `_` (`message.ai` -> `on_message_ai`).
pub fn handler_name(kind: &str) -> String {
    let mut s = String::with_capacity(kind.len() + 3);
    s.push_str("on_");
    s.extend(kind.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn classify_and_handlers() {
        assert_eq!(classify("llm.call"), LLM_CALL);
        assert_eq!(classify("llm.calls"), OTHER);
        assert_eq!(KNOWN[classify("message.ai") as usize], "message.ai");
        assert_eq!(handler_name("resolution.confirmed"), "on_resolution_confirmed");
        assert_eq!(handler_name("a-b.c"), "on_a_b_c");
    }
}
