//! The Diesel schema, shared by both backends: only portable column types (Text, BigInt,
//! Binary, Nullable), times as Unix milliseconds.

diesel::table! {
    auth_epoch (id) {
        id -> Integer,
        epoch -> BigInt,
    }
}

diesel::table! {
    enterprises (id) {
        id -> Text,
        name -> Text,
        // SQLite only: PostgreSQL counts ACTIVE keys in `active_key_stripes`.
        active_keys -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    memberships (enterprise_id, user_id) {
        enterprise_id -> Text,
        user_id -> Text,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_id -> Text,
        token_hash -> Binary,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_keys (seq) {
        seq -> BigInt,
        id -> Text,
        enterprise_id -> Text,
        key_id -> Text,
        key_name -> Text,
        algorithm -> Nullable<Text>,
        jwks_uri -> Nullable<Text>,
        jwk -> Nullable<Text>,
        thumbprint -> Nullable<Text>,
        status -> Text,
        created_at -> BigInt,
        created_by -> Text,
        revoked_at -> Nullable<BigInt>,
        revoked_by -> Nullable<Text>,
        last_verified_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        at -> BigInt,
        enterprise_id -> Text,
        key_id -> Text,
        actor -> Text,
        action -> Text,
        outcome -> Text,
        request_id -> Text,
    }
}

diesel::table! {
    replay_records (evaluation_id, enterprise_id) {
        enterprise_id -> Text,
        evaluation_id -> Text,
        key_id -> Text,
        verified_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(memberships -> enterprises (enterprise_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(webhook_keys -> enterprises (enterprise_id));
diesel::joinable!(audit_events -> enterprises (enterprise_id));

diesel::allow_tables_to_appear_in_same_query!(
    enterprises,
    users,
    memberships,
    api_tokens,
    webhook_keys,
    audit_events,
    replay_records,
    auth_epoch,
);
