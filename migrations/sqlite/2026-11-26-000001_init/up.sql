-- Identity: enterprises, users, memberships and bearer tokens (hashes only).
CREATE TABLE enterprises (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    -- Number of ACTIVE keys; bumped in the same transaction as each insert/revoke so the
    -- per-enterprise limit holds under concurrency.
    active_keys BIGINT NOT NULL DEFAULT 0 CHECK (active_keys >= 0),
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (enterprise_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id);

CREATE TABLE api_tokens (
    id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

-- Webhook signing keys. Rows are never deleted: a revoked row is the keyId's tombstone.
CREATE TABLE webhook_keys (
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

CREATE INDEX webhook_keys_enterprise_seq ON webhook_keys (enterprise_id, seq);

-- Append-only audit trail of key changes and refused attempts.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    key_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_events_enterprise_at ON audit_events (enterprise_id, at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
