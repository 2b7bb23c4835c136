-- Arena battles: the prompt, both sides (model, reply, metrics) and the sampling as one JSON
-- document; the verdict in its own columns so a vote is one conditional UPDATE, taken once.
CREATE TABLE arena_battles (
    id UUID PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    battle JSONB NOT NULL,
    verdict TEXT CHECK (verdict IN ('a', 'b', 'tie', 'bad')),
    voted_at_ms BIGINT
);

CREATE INDEX arena_battles_recent ON arena_battles (created_at_ms DESC);
