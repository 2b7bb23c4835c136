-- Conversations become trees: a message names the message it follows (the nil UUID for a first
-- message). Rows saved before this have NULL and follow the row before them in `seq` order, so
-- they need no rewrite. No foreign key: the JSON fallback may hold a child whose parent only
-- the database has until the import runs, and the reader falls back on order for such rows.
ALTER TABLE messages ADD COLUMN parent_id UUID;
