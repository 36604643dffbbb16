CREATE INDEX memberships_user_id ON memberships (user_id);
DROP INDEX memberships_user_enterprise;
