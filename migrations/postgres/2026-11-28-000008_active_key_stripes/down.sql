ALTER TABLE enterprises ADD COLUMN active_keys BIGINT NOT NULL DEFAULT 0 CHECK (active_keys >= 0);
UPDATE enterprises e SET active_keys = s.total
FROM (SELECT enterprise_id, sum(active) AS total FROM active_key_stripes GROUP BY enterprise_id) s
WHERE s.enterprise_id = e.id;
DROP TABLE active_key_stripes;
