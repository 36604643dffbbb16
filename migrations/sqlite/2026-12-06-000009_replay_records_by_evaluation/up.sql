-- Replay records keyed by evaluationId first. Keyed by enterprise first, each record of
-- a batch landed on the index page of its enterprise: on a service of many enterprises
-- one page of its own per record, written to the log and copied back at checkpoints.
-- Evaluation ids handed out in order (sequences, time-ordered ids) now share pages
-- whatever their enterprise; random ones land where they did. The foreign key to the
-- enterprise goes too, as on PostgreSQL: records are written only by the replay batch,
-- for a key it has just found ACTIVE in the same transaction, whose own foreign key
-- ties it to the enterprise, and enterprises are never deleted.
CREATE TABLE replay_records_by_evaluation (
    evaluation_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verified_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (evaluation_id, enterprise_id)
);
INSERT INTO replay_records_by_evaluation
    (evaluation_id, enterprise_id, key_id, verified_at, expires_at)
    SELECT evaluation_id, enterprise_id, key_id, verified_at, expires_at FROM replay_records;
DROP TABLE replay_records;
ALTER TABLE replay_records_by_evaluation RENAME TO replay_records;
CREATE INDEX replay_records_expires_at ON replay_records (expires_at);
