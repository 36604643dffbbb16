-- Back to a rowid table in registration order, its rows renumbered in their old order
-- (seq across enterprises, then within each).
CREATE TABLE webhook_keys_in_registration_order (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    algorithm TEXT CHECK (algorithm IN ('EdDSA', 'ECDSA')),
    jwks_uri TEXT,
    jwk TEXT,
    thumbprint TEXT,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'REVOKED')),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT,
    last_verified_at BIGINT,
    CONSTRAINT webhook_keys_key_id_tombstone UNIQUE (enterprise_id, key_id),
    CONSTRAINT webhook_keys_thumbprint_once UNIQUE (enterprise_id, thumbprint),
    CHECK ((jwk IS NULL) = (jwks_uri IS NOT NULL)),
    CHECK ((jwk IS NULL) = (thumbprint IS NULL)),
    CHECK ((status = 'REVOKED') = (revoked_at IS NOT NULL))
);
INSERT INTO webhook_keys_in_registration_order
    (id, enterprise_id, key_id, key_name, algorithm, jwks_uri, jwk, thumbprint, status,
     created_at, created_by, revoked_at, revoked_by, last_verified_at)
    SELECT id, enterprise_id, key_id, key_name, algorithm, jwks_uri, jwk, thumbprint, status,
           created_at, created_by, revoked_at, revoked_by, last_verified_at
    FROM webhook_keys ORDER BY seq, enterprise_id;
DROP TABLE webhook_keys;
ALTER TABLE webhook_keys_in_registration_order RENAME TO webhook_keys;
CREATE INDEX webhook_keys_enterprise_seq ON webhook_keys (enterprise_id, seq);
