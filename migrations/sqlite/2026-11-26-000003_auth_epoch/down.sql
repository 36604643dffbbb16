DROP TRIGGER memberships_delete_bump_epoch;
DROP TRIGGER memberships_bump_epoch;
DROP TRIGGER api_tokens_delete_bump_epoch;
DROP TRIGGER api_tokens_bump_epoch;
DROP TABLE auth_epoch;
