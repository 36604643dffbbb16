ALTER TABLE replay_records ADD CONSTRAINT replay_records_enterprise_id_fkey
    FOREIGN KEY (enterprise_id) REFERENCES enterprises (id);
