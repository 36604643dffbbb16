-- A replay record's foreign key to its enterprise was checked for every record (a
-- lookup and a KEY SHARE lock of the enterprise's row, in a trigger), about a fifth of
-- PostgreSQL's work per record. It guarded nothing: records are inserted only by the
-- replay batch statement, for keys it has just found ACTIVE and locked, whose own
-- foreign key ties them to the enterprise, and enterprises are never deleted.
ALTER TABLE replay_records DROP CONSTRAINT replay_records_enterprise_id_fkey;
