CREATE TABLE conversations (
    id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Message ids are unique per conversation (an imported export keeps its ids), which makes
-- appends idempotent: the fallback import can run again without duplicating anything.
CREATE TABLE messages (
    conversation_id UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    seq BIGSERIAL NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    model TEXT,
    engine TEXT,
    sampling JSONB,
    metrics JSONB,
    interrupted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (conversation_id, id)
);

CREATE INDEX messages_in_order ON messages (conversation_id, seq);
CREATE INDEX conversations_recent ON conversations (updated_at_ms DESC);
