DROP TABLE replay_records;
