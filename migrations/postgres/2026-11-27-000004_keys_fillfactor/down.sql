ALTER TABLE webhook_keys RESET (fillfactor);
