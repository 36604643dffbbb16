DROP TRIGGER memberships_bump_epoch ON memberships;
DROP TRIGGER api_tokens_bump_epoch ON api_tokens;
DROP FUNCTION bump_auth_epoch();
DROP TABLE auth_epoch;
