//! The repository against real databases: every test runs on a fresh SQLite file and on
//! a fresh PostgreSQL database.

use std::sync::{Arc, Barrier};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use keyward_domain::ports::{AdminOutcome, AdminStore, InsertOutcome, KeyStore, RevokeOutcome};
use keyward_domain::{
    AlgorithmFamily, AuditContext, Email, EnterpriseId, KeyId, KeyName, KeySource, KeyStatus,
    NewKey, Role, Timestamp,
};
use keyward_persistence::testing::TestDb;
use keyward_persistence::{
    revert_all_migrations, revert_last_migration, run_migrations, ConnectionManager, DbConnection,
    Repository,
};
use uuid::Uuid;

fn enterprise(repo: &Repository, id: &str) -> EnterpriseId {
    let id = EnterpriseId::parse(id).expect("valid enterprise id");
    assert_eq!(
        repo.create_enterprise(&id, "Acme", Timestamp::from_millis(1)),
        Ok(AdminOutcome::Done)
    );
    id
}

fn audit() -> AuditContext {
    AuditContext {
        actor: Email::parse("admin@acme.test").expect("email"),
        request_id: "req-1".into(),
    }
}

fn new_key(enterprise: &EnterpriseId, key_id: &str, thumbprint: &str) -> NewKey {
    let key_id = KeyId::parse(key_id).expect("key id");
    NewKey {
        id: Uuid::new_v4(),
        enterprise_id: enterprise.clone(),
        key_id: key_id.clone(),
        key_name: KeyName::from_key_id(&key_id),
        source: KeySource::Inline {
            algorithm: AlgorithmFamily::EdDsa,
            jwk: format!(
                r#"{{"crv":"Ed25519","kid":"{}","kty":"OKP","x":"{thumbprint}"}}"#,
                key_id.as_str()
            ),
            thumbprint: thumbprint.to_owned(),
        },
        created_at: Timestamp::from_millis(1_000),
        created_by: Email::parse("admin@acme.test").expect("email"),
    }
}

/// Registers `keys` distinct keys into `enterprise` from as many threads at once, under
/// `limit`; `round` keeps keyIds and key material apart between calls.
fn register_at_once(
    repo: &Repository,
    enterprise: &EnterpriseId,
    round: usize,
    keys: usize,
    limit: u32,
) -> Vec<InsertOutcome> {
    let threads = keys.min(32);
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    (t..keys)
                        .step_by(threads)
                        .map(|i| {
                            let key = new_key(
                                enterprise,
                                &format!("r{round}-{i}"),
                                &format!("R{round}-{i}"),
                            );
                            repo.insert_key(&key, limit, &audit())
                                .expect("no storage error")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    })
}

/// The keyIds of `enterprise`'s ACTIVE keys, oldest first.
fn active_key_ids(repo: &Repository, enterprise: &EnterpriseId) -> Vec<KeyId> {
    let mut ids = Vec::new();
    loop {
        let page = repo
            .list_keys(enterprise, Some(KeyStatus::Active), 100, ids.len() as u64)
            .expect("list");
        if page.keys.is_empty() {
            return ids;
        }
        ids.extend(
            page.keys
                .iter()
                .map(|k| KeyId::parse(&k.key_id).expect("key id")),
        );
    }
}

macro_rules! on_both_backends {
    ($($name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            use super::*;
            $( #[test] fn $name() { let $db = TestDb::sqlite(); $body } )*
        }
        mod postgres {
            use super::*;
            $( #[test] fn $name() { let Some($db) = TestDb::postgres() else { return }; $body } )*
        }
    };
}

on_both_backends! {
    migrations_run_up_down_and_up_again(db) {
        let mut conn: DbConnection = ConnectionManager::new(db.url.clone()).establish().expect("connect");
        let reverted = revert_all_migrations(&mut conn).expect("down");
        assert!(!reverted.is_empty());
        assert!(run_migrations(&mut conn).expect("up again") > 0);
        assert_eq!(run_migrations(&mut conn).expect("idempotent"), 0);
    }

    replay_records_outlive_their_rekeying_both_ways(db) {
        use keyward_domain::ports::{RecordOutcome, VerificationStore};
        let repo = db.repository();
        let (acme, other) = (enterprise(&repo, "acme"), enterprise(&repo, "other"));
        for e in [&acme, &other] {
            assert!(matches!(repo.insert_key(&new_key(e, "k", "T"), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        let t = Timestamp::from_millis;
        let record = |e: &EnterpriseId, evaluation: &str| {
            repo.record_verification(e, evaluation, "k", t(1_000), t(i64::MAX / 2))
        };
        assert_eq!(record(&acme, "e1"), Ok(RecordOutcome::Recorded));
        let mut conn: DbConnection = ConnectionManager::new(db.url.clone()).establish().expect("connect");
        // Migration 20261206000009 keys the records by evaluationId first: undone (with
        // any made after it) and done again, every record made before either step still
        // refuses its evaluationId, and only in its own enterprise.
        let mut undone = 1;
        while revert_last_migration(&mut conn).expect("down") != "20261206000009" {
            undone += 1;
        }
        assert_eq!(record(&acme, "e1"), Ok(RecordOutcome::Replayed));
        assert_eq!(record(&acme, "e2"), Ok(RecordOutcome::Recorded));
        assert_eq!(run_migrations(&mut conn).expect("up again"), undone);
        for evaluation in ["e1", "e2"] {
            assert_eq!(record(&acme, evaluation), Ok(RecordOutcome::Replayed), "{evaluation}");
            assert_eq!(record(&other, evaluation), Ok(RecordOutcome::Recorded), "{evaluation}");
        }
        assert_eq!(record(&acme, "e3"), Ok(RecordOutcome::Recorded));
    }

    a_key_loaded_around_the_count_revokes_and_leaves_the_limit_whole(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        // As a bulk load writes it: the row alone, no count of active keys.
        let mut conn = db.pool().get().expect("conn");
        // SQLite orders an enterprise's keys by a seq the loader gives; PostgreSQL's is
        // generated.
        let (seq_column, seq) = if db.sqlite_path().is_some() { ("seq, ", "1, ") } else { ("", "") };
        conn.batch_execute(&format!(
            "INSERT INTO webhook_keys ({seq_column}id, enterprise_id, key_id, key_name, algorithm, jwk, \
             thumbprint, status, created_at, created_by) VALUES ({seq}'6f1c0c52-0000-4000-8000-000000000001', \
             'acme', 'loaded', 'loaded', 'EdDSA', '{{}}', 'TL', 'ACTIVE', 1000, 'loader@acme.test')",
        )).expect("bulk row");
        let loaded = KeyId::parse("loaded").expect("id");
        assert!(matches!(repo.revoke_key(&acme, &loaded, Timestamp::from_millis(2_000), &audit()), Ok(RevokeOutcome::Revoked(_))));
        // The revocation took nothing off a count that never held the key.
        assert!(matches!(repo.insert_key(&new_key(&acme, "a", "TA"), 1, &audit()), Ok(InsertOutcome::Inserted(_))));
        assert_eq!(repo.insert_key(&new_key(&acme, "b", "TB"), 1, &audit()), Ok(InsertOutcome::LimitReached));
    }

    keys_fetched_at_once_each_get_their_own_answer(db) {
        let repo = db.repository();
        let (acme, other) = (enterprise(&repo, "acme"), enterprise(&repo, "other"));
        for (e, key_id, thumbprint) in [(&acme, "a", "TA"), (&acme, "b", "TB"), (&other, "c", "TC")] {
            assert!(matches!(repo.insert_key(&new_key(e, key_id, thumbprint), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        // Asked for from many threads at once, so that reads share batches: a pair made of
        // one request's enterprise and another's keyId ("acme"/"c", "other"/"a") is not
        // a key, and a key asked for twice is found twice.
        let asked = [(&acme, "a"), (&acme, "b"), (&other, "c"), (&acme, "c"), (&other, "a"), (&acme, "a"), (&acme, "nope")];
        let (answers, results) = std::sync::mpsc::channel();
        let barrier = Arc::new(Barrier::new(asked.len() * 8));
        std::thread::scope(|s| {
            for round in 0..8 {
                for (i, (e, key_id)) in asked.iter().enumerate() {
                    let (answers, barrier, repo) = (answers.clone(), barrier.clone(), &repo);
                    s.spawn(move || {
                        barrier.wait();
                        repo.fetch_key(e, key_id, Box::new(move |read| {
                            let _ = answers.send((round, i, read));
                        }));
                    });
                }
            }
        });
        drop(answers);
        let results: Vec<_> = results.iter().collect();
        assert_eq!(results.len(), asked.len() * 8);
        for (_, i, read) in results {
            let (e, key_id) = asked[i];
            let read = read.expect("read");
            let expected = [("acme", "a"), ("acme", "b"), ("other", "c")].contains(&(e.as_str(), key_id));
            assert_eq!(read.is_some(), expected, "{}/{key_id}", e.as_str());
            if let Some(key) = read {
                assert_eq!((key.enterprise_id.as_str(), key.key_id.as_str()), (e.as_str(), key_id));
                assert_eq!(key, repo.get_key(e, key_id).expect("get").expect("present"));
            }
        }
    }

    pages_fetched_at_once_each_get_their_own_answer(db) {
        let repo = db.repository();
        let (acme, other) = (enterprise(&repo, "acme"), enterprise(&repo, "other"));
        for i in 0..6 {
            assert!(matches!(repo.insert_key(&new_key(&acme, &format!("k{i}"), &format!("T{i}")), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        assert!(matches!(repo.insert_key(&new_key(&other, "o0", "TO"), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        let k1 = KeyId::parse("k1").expect("id");
        assert!(matches!(repo.revoke_key(&acme, &k1, Timestamp::from_millis(5), &audit()), Ok(RevokeOutcome::Revoked(_))));
        // Pages that differ from the first in one thing each (enterprise, status, limit,
        // offset), each asked for from several threads at once, so that reads share
        // batches: the same page is answered to each, and no page with another's.
        let asked = [
            (&acme, None, 3, 0), (&other, None, 3, 0), (&acme, Some(KeyStatus::Active), 3, 0),
            (&acme, Some(KeyStatus::Revoked), 3, 0), (&acme, None, 2, 0), (&acme, None, 3, 2),
            (&acme, None, 3, 100),
        ];
        let (answers, results) = std::sync::mpsc::channel();
        let barrier = Arc::new(Barrier::new(asked.len() * 8));
        std::thread::scope(|s| {
            for _ in 0..8 {
                for (i, &(e, status, limit, offset)) in asked.iter().enumerate() {
                    let (answers, barrier, repo) = (answers.clone(), barrier.clone(), &repo);
                    s.spawn(move || {
                        barrier.wait();
                        repo.fetch_page(e, status, limit, offset, Box::new(move |read| {
                            let _ = answers.send((i, read));
                        }));
                    });
                }
            }
        });
        drop(answers);
        let results: Vec<_> = results.iter().collect();
        assert_eq!(results.len(), asked.len() * 8);
        for (i, read) in results {
            let (e, status, limit, offset) = asked[i];
            let expected = repo.list_keys(e, status, limit, offset).expect("list");
            assert_eq!(*read.expect("read"), expected, "{} {status:?} {limit} {offset}", e.as_str());
        }
    }

    a_listed_key_is_its_stored_key_without_its_material(db) {
        use keyward_domain::{ListedKey, ListedSource};
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let mut by_uri = new_key(&acme, "by-uri", "unused");
        by_uri.source = KeySource::JwksUri("https://keys.acme.test/jwks.json".into());
        for key in [new_key(&acme, "inline", "T1"), by_uri, new_key(&acme, "revoked", "T2")] {
            assert!(matches!(repo.insert_key(&key, 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        let revoked = KeyId::parse("revoked").expect("id");
        assert!(matches!(repo.revoke_key(&acme, &revoked, Timestamp::from_millis(7_000), &audit()), Ok(RevokeOutcome::Revoked(_))));
        let page = repo.list_keys(&acme, None, 10, 0).expect("list");
        assert_eq!(page.total, 3);
        let stored: Vec<ListedKey> = ["inline", "by-uri", "revoked"]
            .iter()
            .map(|k| ListedKey::from(repo.get_key(&acme, k).expect("get").expect("present")))
            .collect();
        assert_eq!(page.keys, stored);
        assert_eq!(page.keys[0].source, ListedSource::Inline(AlgorithmFamily::EdDsa));
        assert_eq!(page.keys[1].source, ListedSource::JwksUri("https://keys.acme.test/jwks.json".into()));
        assert_eq!(page.keys[2].revoked_at, Some(Timestamp::from_millis(7_000)));
    }

    key_ids_are_tombstoned_and_thumbprints_unique(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let other = enterprise(&repo, "other");
        let first = repo.insert_key(&new_key(&acme, "k1", "T1"), 20, &audit()).expect("insert");
        assert!(matches!(first, InsertOutcome::Inserted(_)));
        assert_eq!(repo.insert_key(&new_key(&acme, "k1", "T2"), 20, &audit()), Ok(InsertOutcome::KeyIdTaken));
        assert_eq!(
            repo.insert_key(&new_key(&acme, "k2", "T1"), 20, &audit()),
            Ok(InsertOutcome::ThumbprintTaken { key_id: "k1".into() })
        );
        // Another enterprise may use the same keyId and key.
        assert!(matches!(repo.insert_key(&new_key(&other, "k1", "T1"), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        // Revocation keeps both the keyId and the thumbprint blocked.
        let k1 = KeyId::parse("k1").expect("id");
        assert!(matches!(repo.revoke_key(&acme, &k1, Timestamp::from_millis(2_000), &audit()), Ok(RevokeOutcome::Revoked(_))));
        assert_eq!(repo.revoke_key(&acme, &k1, Timestamp::from_millis(3_000), &audit()), Ok(RevokeOutcome::AlreadyRevoked));
        let missing = KeyId::parse("nope").expect("id");
        assert_eq!(repo.revoke_key(&acme, &missing, Timestamp::from_millis(3_000), &audit()), Ok(RevokeOutcome::NotFound));
        assert_eq!(repo.insert_key(&new_key(&acme, "k1", "T9"), 20, &audit()), Ok(InsertOutcome::KeyIdTaken));
        assert_eq!(
            repo.insert_key(&new_key(&acme, "k3", "T1"), 20, &audit()),
            Ok(InsertOutcome::ThumbprintTaken { key_id: "k1".into() })
        );
        let stored = repo.get_key(&acme, "k1").expect("get").expect("present");
        assert_eq!(stored.status, KeyStatus::Revoked);
        assert_eq!(stored.revoked_at, Some(Timestamp::from_millis(2_000)));
        assert_eq!(stored.revoked_by.as_deref(), Some("admin@acme.test"));
    }

    active_key_limit_counts_only_active_keys(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        for i in 0..3 {
            let outcome = repo.insert_key(&new_key(&acme, &format!("k{i}"), &format!("T{i}")), 3, &audit());
            assert!(matches!(outcome, Ok(InsertOutcome::Inserted(_))));
        }
        assert_eq!(repo.insert_key(&new_key(&acme, "k3", "T3"), 3, &audit()), Ok(InsertOutcome::LimitReached));
        // A refused key leaves no trace but its audit line: its keyId is still free.
        let k0 = KeyId::parse("k0").expect("id");
        assert!(matches!(repo.revoke_key(&acme, &k0, Timestamp::from_millis(5), &audit()), Ok(RevokeOutcome::Revoked(_))));
        assert!(matches!(repo.insert_key(&new_key(&acme, "k3", "T3"), 3, &audit()), Ok(InsertOutcome::Inserted(_))));
    }

    concurrent_registrations_stop_at_the_active_key_limit(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let inserted = |round: usize, limit: u32, keys: usize| {
            register_at_once(&repo, &acme, round, keys, limit)
                .into_iter()
                .filter(|o| matches!(o, InsertOutcome::Inserted(_)))
                .count()
        };
        assert_eq!(inserted(0, 5, 32), 5);
        for i in 0..2 {
            let key_id = active_key_ids(&repo, &acme)[i].clone();
            assert!(matches!(repo.revoke_key(&acme, &key_id, Timestamp::from_millis(5), &audit()), Ok(RevokeOutcome::Revoked(_))));
        }
        assert_eq!(inserted(1, 5, 32), 2);
        assert_eq!(active_key_ids(&repo, &acme).len(), 5);
        // Room for every one of them, however many arrive at once.
        assert_eq!(inserted(2, 100_000, 64), 64);
        // Exactly up to the limit, where every share of it holds one key.
        assert_eq!(inserted(3, 100, 64), 31);
        assert_eq!(active_key_ids(&repo, &acme).len(), 100);
    }

    a_lowered_limit_holds_once_revocations_bring_the_count_under_it(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        for (limit, keys) in [(10, 8), (2_000, 1_100)] {
            let round = keys;
            let outcomes = register_at_once(&repo, &acme, round, keys - active_key_ids(&repo, &acme).len(), limit);
            assert!(outcomes.iter().all(|o| matches!(o, InsertOutcome::Inserted(_))), "{limit}");
            // Lowered: nothing more until fewer than the limit are active.
            let lowered = (keys / 2) as u32;
            let mut attempt = 0;
            let mut register = || {
                attempt += 1;
                repo.insert_key(&new_key(&acme, &format!("late-{keys}-{attempt}"), &format!("L{keys}-{attempt}")), lowered, &audit()).expect("insert")
            };
            let mut active = active_key_ids(&repo, &acme);
            while active.len() > lowered as usize - 1 {
                assert_eq!(register(), InsertOutcome::LimitReached, "{} active, limit {lowered}", active.len());
                let key_id = active.pop().expect("an active key");
                assert!(matches!(repo.revoke_key(&acme, &key_id, Timestamp::from_millis(5), &audit()), Ok(RevokeOutcome::Revoked(_))));
            }
            assert!(matches!(register(), InsertOutcome::Inserted(_)));
            assert_eq!(register(), InsertOutcome::LimitReached);
            assert_eq!(active_key_ids(&repo, &acme).len(), lowered as usize);
        }
    }

    concurrent_registrations_of_one_key_id_store_exactly_one(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let barrier = Arc::new(Barrier::new(32));
        let outcomes: Vec<InsertOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|i| {
                    let (repo, acme, barrier) = (repo.clone(), acme.clone(), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        repo.insert_key(&new_key(&acme, "same", &format!("T{i}")), 100, &audit()).expect("no storage error")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let inserted = outcomes.iter().filter(|o| matches!(o, InsertOutcome::Inserted(_))).count();
        assert_eq!(inserted, 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, InsertOutcome::Inserted(_) | InsertOutcome::KeyIdTaken)));
        let page = repo.list_keys(&acme, None, 100, 0).expect("list");
        assert_eq!(page.total, 1);
    }

    concurrent_registrations_of_one_key_material_store_exactly_one(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let barrier = Arc::new(Barrier::new(32));
        let outcomes: Vec<InsertOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|i| {
                    let (repo, acme, barrier) = (repo.clone(), acme.clone(), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        repo.insert_key(&new_key(&acme, &format!("k{i}"), "SAME"), 100, &audit()).expect("no storage error")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let inserted = outcomes.iter().filter(|o| matches!(o, InsertOutcome::Inserted(_))).count();
        assert_eq!(inserted, 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, InsertOutcome::Inserted(_) | InsertOutcome::ThumbprintTaken { .. })));
        assert_eq!(repo.list_keys(&acme, None, 100, 0).expect("list").total, 1);
    }

    concurrent_revocations_succeed_once(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        assert!(matches!(repo.insert_key(&new_key(&acme, "k", "T"), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        let barrier = Arc::new(Barrier::new(16));
        let outcomes: Vec<RevokeOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (repo, acme, barrier) = (repo.clone(), acme.clone(), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        let k = KeyId::parse("k").expect("id");
                        repo.revoke_key(&acme, &k, Timestamp::from_millis(9), &audit()).expect("no storage error")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert_eq!(outcomes.iter().filter(|o| matches!(o, RevokeOutcome::Revoked(_))).count(), 1);
        assert_eq!(outcomes.iter().filter(|o| **o == RevokeOutcome::AlreadyRevoked).count(), 15);
    }

    listing_is_ordered_filtered_and_paged(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        for i in 0..7 {
            assert!(matches!(repo.insert_key(&new_key(&acme, &format!("k{i}"), &format!("T{i}")), 20, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        for i in [1, 4] {
            let k = KeyId::parse(&format!("k{i}")).expect("id");
            assert!(matches!(repo.revoke_key(&acme, &k, Timestamp::from_millis(5), &audit()), Ok(RevokeOutcome::Revoked(_))));
        }
        let ids = |page: keyward_domain::KeyPage| page.keys.into_iter().map(|k| k.key_id).collect::<Vec<_>>();
        assert_eq!(ids(repo.list_keys(&acme, None, 3, 0).expect("page")), ["k0", "k1", "k2"]);
        assert_eq!(ids(repo.list_keys(&acme, None, 3, 6).expect("page")), ["k6"]);
        let active = repo.list_keys(&acme, Some(KeyStatus::Active), 2, 1).expect("page");
        assert_eq!(active.total, 5);
        assert_eq!(ids(active), ["k2", "k3"]);
        assert_eq!(ids(repo.list_keys(&acme, Some(KeyStatus::Revoked), 10, 0).expect("page")), ["k1", "k4"]);
        // Past the end, the count is still the filter's; an enterprise without keys has none.
        let past_end = repo.list_keys(&acme, None, 10, 100).expect("page");
        assert_eq!((past_end.keys.len(), past_end.total), (0, 7));
        let past_revoked = repo.list_keys(&acme, Some(KeyStatus::Revoked), 10, 2).expect("page");
        assert_eq!((past_revoked.keys.len(), past_revoked.total), (0, 2));
        let other = enterprise(&repo, "other");
        let empty = repo.list_keys(&other, None, 10, 0).expect("page");
        assert_eq!((empty.keys.len(), empty.total), (0, 0));
    }

    audit_trail_records_changes_and_refusals_and_is_append_only(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let _ = repo.insert_key(&new_key(&acme, "k", "T"), 1, &audit());
        let _ = repo.insert_key(&new_key(&acme, "k", "T2"), 1, &audit());
        let _ = repo.insert_key(&new_key(&acme, "k2", "T"), 1, &audit());
        let _ = repo.insert_key(&new_key(&acme, "k3", "T3"), 1, &audit());
        let k = KeyId::parse("k").expect("id");
        let _ = repo.revoke_key(&acme, &k, Timestamp::from_millis(2_000), &audit());
        let events = repo.audit_events(&acme, None).expect("audit");
        let seen: Vec<(String, String)> = events.iter().map(|e| (e.action.clone(), e.outcome.clone())).collect();
        assert_eq!(seen, [
            ("REGISTER".into(), "OK".into()),
            ("REGISTER".into(), "KEY_ID_ALREADY_USED".into()),
            ("REGISTER".into(), "KEY_ALREADY_REGISTERED".into()),
            ("REGISTER".into(), "ACTIVE_KEY_LIMIT_REACHED".into()),
            ("REVOKE".into(), "OK".into()),
        ]);
        assert!(events.iter().all(|e| e.actor == "admin@acme.test" && e.request_id == "req-1"));
        assert_eq!(repo.audit_events(&acme, Some(Timestamp::from_millis(1_001))).expect("since").len(), 1);
        let mut conn = db.pool().get().expect("conn");
        assert!(conn.batch_execute("UPDATE audit_events SET outcome = 'OK'").is_err());
        assert!(conn.batch_execute("DELETE FROM audit_events").is_err());
    }

    tokens_and_memberships(db) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        assert_eq!(repo.create_enterprise(&acme, "again", Timestamp::from_millis(1)), Ok(AdminOutcome::AlreadyExists));
        let email = Email::parse("Admin@Acme.test").expect("email");
        assert_eq!(repo.create_user(Uuid::new_v4(), &email, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.create_user(Uuid::new_v4(), &email, Timestamp::from_millis(1)), Ok(AdminOutcome::AlreadyExists));
        let ghost = Email::parse("ghost@acme.test").expect("email");
        assert_eq!(repo.set_membership(&acme, &ghost, Role::Admin, Timestamp::from_millis(1)), Ok(AdminOutcome::NotFound));
        assert_eq!(repo.set_membership(&acme, &email, Role::Member, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.insert_token("0123456789abcdef", &email, b"hash", Timestamp::from_millis(1), None), Ok(AdminOutcome::Done));
        assert_eq!(repo.insert_token("0123456789abcdee", &ghost, b"hash", Timestamp::from_millis(1), None), Ok(AdminOutcome::NotFound));
        let grant = repo.token_grant("0123456789abcdef", Some(&acme)).expect("grant").expect("present");
        assert_eq!(grant.role, Some(Role::Member));
        assert_eq!(grant.email, "admin@acme.test");
        assert_eq!(repo.set_membership(&acme, &email, Role::Admin, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        let grant = repo.token_grant("0123456789abcdef", Some(&acme)).expect("grant").expect("present");
        assert_eq!(grant.role, Some(Role::Admin));
        let other = EnterpriseId::parse("other").expect("id");
        assert_eq!(repo.token_grant("0123456789abcdef", Some(&other)).expect("grant").expect("present").role, None);
        assert!(repo.token_grant("ffffffffffffffff", Some(&acme)).expect("grant").is_none());
        assert_eq!(repo.revoke_token("0123456789abcdef", Timestamp::from_millis(2)), Ok(AdminOutcome::Done));
        assert_eq!(repo.revoke_token("0123456789abcdef", Timestamp::from_millis(2)), Ok(AdminOutcome::AlreadyExists));
        assert_eq!(repo.revoke_token("ffffffffffffffff", Timestamp::from_millis(2)), Ok(AdminOutcome::NotFound));
        assert!(repo.token_grant("0123456789abcdef", None).expect("grant").expect("present").revoked);
    }

    every_change_that_takes_rights_away_moves_the_auth_epoch(db) {
        // Servers reuse a grant only while the epoch is not newer than it: a role
        // change or a token revocation must move the epoch, and a grant must carry the
        // epoch it was read at.
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let email = Email::parse("admin@acme.test").expect("email");
        assert_eq!(repo.create_user(Uuid::new_v4(), &email, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.set_membership(&acme, &email, Role::Admin, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.insert_token("0123456789abcdef", &email, b"hash", Timestamp::from_millis(1), None), Ok(AdminOutcome::Done));
        let start = repo.auth_epoch().expect("epoch");
        let grant = repo.token_grant("0123456789abcdef", Some(&acme)).expect("grant").expect("present");
        assert_eq!(grant.epoch, start);
        assert_eq!(repo.set_membership(&acme, &email, Role::Member, Timestamp::from_millis(2)), Ok(AdminOutcome::Done));
        let demoted = repo.auth_epoch().expect("epoch");
        assert!(demoted > grant.epoch, "a role change retires earlier grants");
        assert_eq!(repo.revoke_token("0123456789abcdef", Timestamp::from_millis(3)), Ok(AdminOutcome::Done));
        let revoked = repo.auth_epoch().expect("epoch");
        assert!(revoked > demoted, "a revocation retires earlier grants");
        // A refusal is reused like a grant: a new membership retires it.
        let globex = enterprise(&repo, "globex");
        assert_eq!(repo.set_membership(&globex, &email, Role::Admin, Timestamp::from_millis(4)), Ok(AdminOutcome::Done));
        assert!(repo.auth_epoch().expect("epoch") > revoked, "a new membership retires earlier refusals");
    }

    grants_are_read_with_the_memberships_that_follow(db) {
        let repo = db.repository();
        let ids: Vec<EnterpriseId> = ["e1", "e2", "e3", "e4", "e5"].iter().map(|e| enterprise(&repo, e)).collect();
        let email = Email::parse("ops@example.test").expect("email");
        assert_eq!(repo.create_user(Uuid::new_v4(), &email, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        for (e, role) in [(0, Role::Admin), (2, Role::Member), (3, Role::Admin), (4, Role::Admin)] {
            assert_eq!(repo.set_membership(&ids[e], &email, role, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        }
        // Another holder's memberships never come along.
        let other = Email::parse("other@example.test").expect("email");
        assert_eq!(repo.create_user(Uuid::new_v4(), &other, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.set_membership(&ids[1], &other, Role::Admin, Timestamp::from_millis(1)), Ok(AdminOutcome::Done));
        assert_eq!(repo.insert_token("00000000000000aa", &email, b"hash", Timestamp::from_millis(1), Some(Timestamp::from_millis(9))), Ok(AdminOutcome::Done));
        let window = |e: usize, following: u32| {
            let (grant, after) = repo.token_grant_and_following("00000000000000aa", &ids[e], following).expect("read").expect("token");
            let single = repo.token_grant("00000000000000aa", Some(&ids[e])).expect("read").expect("token");
            let fields = |g: &keyward_domain::TokenGrant| (g.role, g.email.clone(), g.expires_at, g.revoked, g.epoch, g.hash.clone());
            assert_eq!(fields(&grant), fields(&single), "the grant for e{} is the one read alone", e + 1);
            let after: Vec<(String, Role)> = after;
            (grant.role, after)
        };
        let named = |pairs: &[(&str, Role)]| pairs.iter().map(|(e, r)| (e.to_string(), *r)).collect::<Vec<_>>();
        assert_eq!(window(0, 2), (Some(Role::Admin), named(&[("e3", Role::Member), ("e4", Role::Admin)])));
        // Not a member of e2: refused there, and the window starts after it.
        assert_eq!(window(1, 2), (None, named(&[("e3", Role::Member), ("e4", Role::Admin), ("e5", Role::Admin)])));
        assert_eq!(window(4, 10), (Some(Role::Admin), vec![]));
        assert_eq!(window(0, 0), (Some(Role::Admin), vec![]));
        let (grant, after) = repo.token_grant_and_following("00000000000000aa", &ids[0], 10).expect("read").expect("token");
        assert_eq!((grant.expires_at, grant.revoked, grant.email.as_str()), (Some(Timestamp::from_millis(9)), false, "ops@example.test"));
        assert_eq!(after.len(), 3);
        // No memberships at or after the enterprise asked about, and unknown tokens.
        assert_eq!(repo.set_membership(&ids[4], &email, Role::Member, Timestamp::from_millis(2)), Ok(AdminOutcome::Done));
        assert!(repo.token_grant_and_following("ffffffffffffffff", &ids[0], 10).expect("read").is_none());
        let beyond = EnterpriseId::parse("zz").expect("id");
        let (grant, after) = repo.token_grant_and_following("00000000000000aa", &beyond, 10).expect("read").expect("token");
        assert_eq!((grant.role, after), (None, vec![]));
    }

    concurrent_writes_are_all_found_by_a_new_repository(db) {
        // Writers share log syncs: every acknowledged write must be found by a
        // repository opened afterwards on the same database.
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        let threads = 8;
        let each = 10;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (repo, acme, start) = (repo.clone(), acme.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for n in 0..each {
                        let key = new_key(&acme, &format!("k-{t}-{n}"), &format!("T{t}x{n}"));
                        assert!(matches!(
                            repo.insert_key(&key, 1_000, &audit()),
                            Ok(InsertOutcome::Inserted(_))
                        ));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("writer");
        }
        drop(repo);
        let reopened = db.repository();
        let page = reopened.list_keys(&acme, None, 100, 0).expect("list");
        assert_eq!(page.total, (threads * each) as u64);
    }

    two_writers_record_shared_keys_once_while_one_is_revoked(db) {
        // Two repositories (two processes' writers) record the same evaluationIds on
        // the same keys at once, each stamping every key as it first sees it, while
        // one key is revoked: nothing fails (no deadlock between recording and
        // stamping), each evaluationId is recorded once, only the revoked key's are
        // refused as revoked, and the stamps are the evaluations' times.
        use keyward_domain::ports::{RecordOutcome, VerificationStore};
        let (first, second) = (db.repository(), db.repository());
        let acme = enterprise(&first, "acme");
        let keys = 150;
        for k in 0..keys {
            let key = new_key(&acme, &format!("k{k}"), &format!("T{k}"));
            assert!(matches!(first.insert_key(&key, 1_000, &audit()), Ok(InsertOutcome::Inserted(_))));
        }
        let threads = 8;
        let start = Arc::new(Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let repo = if t % 2 == 0 { first.clone() } else { second.clone() };
                let (acme, start) = (acme.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..keys)
                        .map(|n| {
                            let at = Timestamp::from_millis(10_000 + n as i64);
                            let outcome = repo.record_verification(
                                &acme,
                                &format!("e{n}"),
                                &format!("k{n}"),
                                at,
                                Timestamp::from_millis(100_000),
                            );
                            (n, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        start.wait();
        let revoked = KeyId::parse("k7").expect("key id");
        assert!(matches!(
            second.revoke_key(&acme, &revoked, Timestamp::from_millis(10_030), &audit()),
            Ok(RevokeOutcome::Revoked(_))
        ));
        let mut recorded = vec![0; keys];
        for handle in handles {
            for (n, outcome) in handle.join().expect("recorder") {
                match outcome {
                    Ok(RecordOutcome::Recorded) => recorded[n] += 1,
                    Ok(RecordOutcome::Replayed) => {}
                    Ok(RecordOutcome::KeyRevoked) => assert_eq!(n, 7, "e{n}: only k7 was revoked"),
                    Err(err) => panic!("e{n} failed: {err:?}"),
                }
            }
        }
        for (n, count) in recorded.iter().enumerate() {
            if n == 7 {
                assert!(*count <= 1, "e{n} recorded {count} times");
            } else {
                assert_eq!(*count, 1, "e{n} recorded {count} times");
            }
        }
        // Key k verified only e{k}. A key whose stamp both writers skipped (each holding
        // it for the other) has none; the others carry that evaluation's time.
        let mut stamped = 0;
        for k in (0..keys).filter(|k| *k != 7) {
            let key = first.get_key(&acme, &format!("k{k}")).expect("get").expect("key");
            if let Some(at) = key.last_verified_at {
                assert_eq!(at.millis(), 10_000 + k as i64, "k{k}'s stamp");
                stamped += 1;
            }
        }
        assert!(stamped > 0, "no key was stamped");
    }
}

#[test]
fn sqlite_files_are_in_wal_mode_with_full_sync() {
    let db = TestDb::sqlite();
    let mut conn = db.pool().get().expect("conn");
    #[derive(QueryableByName)]
    struct Settings {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }
    let settings: Settings = diesel::sql_query(
        "SELECT journal_mode, synchronous FROM pragma_journal_mode, pragma_synchronous",
    )
    .get_result(&mut *conn)
    .expect("pragmas");
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(settings.synchronous, 2, "FULL");
}

#[test]
fn sqlite_keys_keep_their_enterprise_order_through_the_migration_both_ways() {
    let db = TestDb::sqlite();
    let repo = db.repository();
    let (acme, other) = (enterprise(&repo, "acme"), enterprise(&repo, "other"));
    let register = |e: &EnterpriseId, key_id: &str| {
        let thumbprint = format!("T{}{key_id}", e.as_str());
        let inserted = repo.insert_key(&new_key(e, key_id, &thumbprint), 20, &audit());
        assert!(
            matches!(inserted, Ok(InsertOutcome::Inserted(_))),
            "{key_id}"
        );
    };
    let listed = |e: &EnterpriseId| -> Vec<String> {
        let page = repo.list_keys(e, None, 100, 0).expect("list");
        page.keys.into_iter().map(|k| k.key_id).collect()
    };
    // Rows written in turns, as enterprises register keys over time, into the table as
    // it was before (in registration order across enterprises).
    let mut conn: DbConnection = ConnectionManager::new(db.url.clone())
        .establish()
        .expect("connect");
    assert_eq!(
        revert_last_migration(&mut conn).expect("down"),
        "20261207000010"
    );
    for (n, key_id) in ["a", "b", "c"].into_iter().enumerate() {
        for (i, e) in ["acme", "other"].into_iter().enumerate() {
            conn.batch_execute(&format!(
                "INSERT INTO webhook_keys (id, enterprise_id, key_id, key_name, algorithm, jwk, \
                 thumbprint, status, created_at, created_by) VALUES \
                 ('6f1c0c52-0000-4000-8000-0000000000{n}{i}', '{e}', '{key_id}', '{key_id}', \
                 'EdDSA', '{{}}', 'T{e}{key_id}', 'ACTIVE', 1000, 'loader@acme.test')"
            ))
            .expect("row before");
        }
    }
    assert_eq!(run_migrations(&mut conn).expect("up again"), 1);
    for key_id in ["d", "e"] {
        register(&acme, key_id);
        register(&other, key_id);
    }
    let expected = ["a", "b", "c", "d", "e"];
    for e in [&acme, &other] {
        assert_eq!(listed(e), expected, "{e:?}");
        assert_eq!(
            repo.list_keys(e, None, 2, 2).expect("page").keys[0].key_id,
            "c"
        );
    }
    // Found by keyId, revoked and stamped in the new layout.
    let c = KeyId::parse("c").expect("id");
    assert!(repo.get_key(&acme, "c").expect("get").is_some());
    assert!(matches!(
        repo.revoke_key(&acme, &c, Timestamp::from_millis(2_000), &audit()),
        Ok(RevokeOutcome::Revoked(_))
    ));
    assert_eq!(
        repo.list_keys(&acme, Some(KeyStatus::Revoked), 100, 0)
            .expect("revoked")
            .keys[0]
            .key_id,
        "c"
    );
    // Undone again, the same order and the same keys.
    assert_eq!(
        revert_last_migration(&mut conn).expect("down"),
        "20261207000010"
    );
    for e in [&acme, &other] {
        assert_eq!(listed(e), expected, "{e:?}");
    }
}

#[test]
fn sqlite_refuses_writes_once_its_log_cannot_be_synced() {
    use keyward_domain::ports::ReadinessProbe;
    use keyward_domain::StoreError;
    let db = TestDb::sqlite();
    let repo = db.repository();
    let acme = enterprise(&repo, "acme");
    assert!(matches!(
        repo.insert_key(&new_key(&acme, "k1", "T1"), 20, &audit()),
        Ok(InsertOutcome::Inserted(_))
    ));
    assert_eq!(repo.ready(), Ok(true));
    // The log disappears under the open database: its writes can no longer be made
    // durable, so none may be acknowledged.
    let path = db.sqlite_path().expect("a file");
    std::fs::remove_file(format!("{}-wal", path.display())).expect("remove the log");
    assert!(matches!(
        repo.insert_key(&new_key(&acme, "k2", "T2"), 20, &audit()),
        Err(StoreError::Internal(why)) if why.contains("synced")
    ));
    assert!(matches!(
        repo.revoke_key(
            &acme,
            &KeyId::parse("k1").expect("key id"),
            Timestamp::from_millis(2),
            &audit()
        ),
        Err(StoreError::Internal(_))
    ));
    assert!(matches!(repo.ready(), Err(StoreError::Unavailable(why)) if why.contains("restarted")));
}

mod replay {
    use super::*;
    use keyward_domain::ports::{RecordOutcome, VerificationStore};

    fn check(db: TestDb) {
        let repo = db.repository();
        let acme = enterprise(&repo, "acme");
        assert!(matches!(
            repo.insert_key(&new_key(&acme, "k", "T"), 20, &audit()),
            Ok(InsertOutcome::Inserted(_))
        ));
        let t = Timestamp::from_millis;
        assert_eq!(
            repo.record_verification(&acme, "e1", "k", t(1_000), t(5_000)),
            Ok(RecordOutcome::Recorded)
        );
        assert_eq!(
            repo.record_verification(&acme, "e1", "k", t(1_500), t(5_500)),
            Ok(RecordOutcome::Replayed)
        );
        assert_eq!(
            repo.record_verification(&acme, "e2", "k", t(2_000), t(9_000)),
            Ok(RecordOutcome::Recorded)
        );
        assert_eq!(
            repo.get_key(&acme, "k")
                .expect("get")
                .expect("key")
                .last_verified_at,
            Some(t(1_000)),
            "stamped at most once a minute"
        );
        // Another process (its own writer) leaves a stamp younger than a minute alone,
        // and replaces an older one.
        let stamp_of = |repo: &Repository| {
            repo.get_key(&acme, "k")
                .expect("get")
                .expect("key")
                .last_verified_at
        };
        let second = db.repository();
        assert_eq!(
            second.record_verification(&acme, "e3", "k", t(30_000), t(90_000)),
            Ok(RecordOutcome::Recorded)
        );
        assert_eq!(stamp_of(&second), Some(t(1_000)));
        let third = db.repository();
        assert_eq!(
            third.record_verification(&acme, "e4", "k", t(70_000), t(90_000)),
            Ok(RecordOutcome::Recorded)
        );
        assert_eq!(stamp_of(&third), Some(t(70_000)));
        // Purging removes only what expired.
        assert_eq!(repo.purge_replay_records(t(6_000)), Ok(1));
        assert_eq!(
            repo.record_verification(&acme, "e2", "k", t(6_000), t(9_000)),
            Ok(RecordOutcome::Replayed)
        );
        // A revoked key records nothing.
        let k = KeyId::parse("k").expect("id");
        assert!(matches!(
            repo.revoke_key(&acme, &k, t(7_000), &audit()),
            Ok(RevokeOutcome::Revoked(_))
        ));
        assert_eq!(
            repo.record_verification(&acme, "e3", "k", t(8_000), t(9_000)),
            Ok(RecordOutcome::KeyRevoked)
        );
        assert_eq!(
            repo.record_verification(&acme, "e3", "missing", t(8_000), t(9_000)),
            Ok(RecordOutcome::KeyRevoked)
        );
    }

    #[test]
    fn replay_records_on_sqlite() {
        check(TestDb::sqlite());
    }

    #[test]
    fn replay_records_on_postgres() {
        if let Some(db) = TestDb::postgres() {
            check(db);
        }
    }
}
