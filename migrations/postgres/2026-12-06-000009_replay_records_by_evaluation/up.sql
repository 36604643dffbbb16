-- Replay records keyed by evaluationId first. Keyed by enterprise first, each record of
-- a batch landed on the index page of its enterprise: on a service of many enterprises
-- one page of its own per record. Evaluation ids handed out in order (sequences,
-- time-ordered ids) now share pages whatever their enterprise; random ones land where
-- they did.
ALTER TABLE replay_records DROP CONSTRAINT replay_records_pkey;
ALTER TABLE replay_records ADD CONSTRAINT replay_records_pkey
    PRIMARY KEY (evaluation_id, enterprise_id);
