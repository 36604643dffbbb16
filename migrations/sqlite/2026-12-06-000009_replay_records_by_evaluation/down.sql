CREATE TABLE replay_records_by_enterprise (
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    evaluation_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verified_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (enterprise_id, evaluation_id)
);
INSERT INTO replay_records_by_enterprise
    (enterprise_id, evaluation_id, key_id, verified_at, expires_at)
    SELECT enterprise_id, evaluation_id, key_id, verified_at, expires_at FROM replay_records;
DROP TABLE replay_records;
ALTER TABLE replay_records_by_enterprise RENAME TO replay_records;
CREATE INDEX replay_records_expires_at ON replay_records (expires_at);
