-- One row per (enterprise, evaluationId) that verified successfully: the replay guard.
-- Written in the same transaction that confirms the key is still active.
CREATE TABLE replay_records (
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    evaluation_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verified_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (enterprise_id, evaluation_id)
);
CREATE INDEX replay_records_expires_at ON replay_records (expires_at);
