-- The listing's index carries each key's status, so a listing counts the keys its
-- filter matches from the index alone (on pages the visibility map marks all-visible)
-- and reads from the table only the rows of its page. A revocation, which changes the
-- status, now adds an index entry; a stamp of last_verified_at still does not.
CREATE INDEX webhook_keys_enterprise_seq_status ON webhook_keys (enterprise_id, seq)
    INCLUDE (status);
DROP INDEX webhook_keys_enterprise_seq;
