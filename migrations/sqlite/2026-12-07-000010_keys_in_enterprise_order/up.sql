-- Keys stored in the order a listing reads them: the table is keyed by (enterprise, seq),
-- without a rowid. A rowid table kept them in registration order across all enterprises,
-- so a page of one enterprise's keys went through its index and then looked up each row
-- apart, on a page of its own once enterprises register keys in turn; now a page is one
-- run of neighbouring rows. seq orders an enterprise's keys: registration gives a new
-- key the enterprise's last seq plus one (under the write lock; keys are never deleted,
-- so it only grows), and the rows copied here keep theirs. Gets and verifications find
-- a key through the keyId's unique index, as before.
CREATE TABLE webhook_keys_in_enterprise_order (
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
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
    PRIMARY KEY (enterprise_id, seq),
    CONSTRAINT webhook_keys_key_id_tombstone UNIQUE (enterprise_id, key_id),
    CONSTRAINT webhook_keys_thumbprint_once UNIQUE (enterprise_id, thumbprint),
    CHECK ((jwk IS NULL) = (jwks_uri IS NOT NULL)),
    CHECK ((jwk IS NULL) = (thumbprint IS NULL)),
    CHECK ((status = 'REVOKED') = (revoked_at IS NOT NULL))
) WITHOUT ROWID;
INSERT INTO webhook_keys_in_enterprise_order
    (enterprise_id, seq, id, key_id, key_name, algorithm, jwks_uri, jwk, thumbprint, status,
     created_at, created_by, revoked_at, revoked_by, last_verified_at)
    SELECT enterprise_id, seq, id, key_id, key_name, algorithm, jwks_uri, jwk, thumbprint,
           status, created_at, created_by, revoked_at, revoked_by, last_verified_at
    FROM webhook_keys;
DROP TABLE webhook_keys;
ALTER TABLE webhook_keys_in_enterprise_order RENAME TO webhook_keys;
