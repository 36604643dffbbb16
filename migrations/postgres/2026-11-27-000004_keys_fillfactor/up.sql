-- A verification stamps its key's last_verified_at (at most once a minute per key).
-- With full pages PostgreSQL writes that as a new row version elsewhere plus an entry
-- in each of the table's five indexes; room left on each page lets it update in place
-- of the page (a HOT update, no index entries, as last_verified_at is not indexed).
-- Applies to pages written from now on.
ALTER TABLE webhook_keys SET (fillfactor = 70);
