ALTER TABLE replay_records DROP CONSTRAINT replay_records_pkey;
ALTER TABLE replay_records ADD CONSTRAINT replay_records_pkey
    PRIMARY KEY (enterprise_id, evaluation_id);
