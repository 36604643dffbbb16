-- Servers reuse a refusal (a token without a membership in an enterprise) like a grant,
-- so a new membership must retire what was read before it, as a changed one does.
CREATE TRIGGER memberships_insert_bump_epoch AFTER INSERT ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_epoch();
