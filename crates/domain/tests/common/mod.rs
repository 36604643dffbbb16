//! Shared by the domain's test stores.

/// The [`keyward_domain::ports::KeyStore`] writes and listing a test store does not
/// support: each panics if called, naming `$why`.
macro_rules! unsupported_key_writes {
    ($why:literal) => {
        fn insert_key(
            &self,
            _k: &keyward_domain::NewKey,
            _m: u32,
            _a: &keyward_domain::AuditContext,
        ) -> Result<keyward_domain::ports::InsertOutcome, keyward_domain::StoreError> {
            unimplemented!($why)
        }
        fn list_keys(
            &self,
            _e: &keyward_domain::EnterpriseId,
            _s: Option<keyward_domain::KeyStatus>,
            _l: u32,
            _o: u64,
        ) -> Result<keyward_domain::KeyPage, keyward_domain::StoreError> {
            unimplemented!($why)
        }
        fn revoke_key(
            &self,
            _e: &keyward_domain::EnterpriseId,
            _k: &keyward_domain::KeyId,
            _t: keyward_domain::Timestamp,
            _a: &keyward_domain::AuditContext,
        ) -> Result<keyward_domain::ports::RevokeOutcome, keyward_domain::StoreError> {
            unimplemented!($why)
        }
    };
}
