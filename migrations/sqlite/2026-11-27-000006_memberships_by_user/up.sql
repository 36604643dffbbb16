-- A token's grants are read a window at a time: the holder's memberships from one
-- enterprise on, in enterprise order. This index serves that range directly (and,
-- as its prefix, everything the user-only index it replaces served).
CREATE INDEX memberships_user_enterprise ON memberships (user_id, enterprise_id);
DROP INDEX memberships_user_id;
