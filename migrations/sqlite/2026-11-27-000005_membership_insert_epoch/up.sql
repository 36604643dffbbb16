-- Servers reuse a refusal (a token without a membership in an enterprise) like a grant,
-- so a new membership must retire what was read before it, as a changed one does.
CREATE TRIGGER memberships_insert_bump_epoch AFTER INSERT ON memberships
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
