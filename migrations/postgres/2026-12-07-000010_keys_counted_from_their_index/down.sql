CREATE INDEX webhook_keys_enterprise_seq ON webhook_keys (enterprise_id, seq);
DROP INDEX webhook_keys_enterprise_seq_status;
