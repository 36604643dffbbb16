//! `keyward admin ...`: the operator's commands, each a thin call into the domain's
//! `AdminService`.

use std::sync::Arc;

use keyward_domain::AdminService;
use keyward_persistence::PoolOptions;

use crate::cli::{
    parse_ttl, AdminArgs, AdminCommand, EnterpriseCommand, MemberCommand, TokenCommand, UserCommand,
};

pub fn run(args: AdminArgs) -> Result<(), String> {
    let repository = crate::open_database(
        args.database.url(),
        PoolOptions {
            max_size: 2,
            ..PoolOptions::default()
        },
    )?;
    let admin = AdminService::new(Arc::new(repository), crate::clock());
    let fail = |e: keyward_domain::DomainError| e.to_string();
    match args.command {
        AdminCommand::Enterprise(EnterpriseCommand::Create {
            enterprise_id,
            name,
        }) => {
            let id = admin
                .create_enterprise(&enterprise_id, name.as_deref())
                .map_err(fail)?;
            println!("created enterprise {id}");
        }
        AdminCommand::User(UserCommand::Create { email }) => {
            let email = admin.create_user(&email).map_err(fail)?;
            println!("created user {email}");
        }
        AdminCommand::Member(MemberCommand::Add {
            enterprise_id,
            email,
            role,
        }) => {
            admin
                .add_member(&enterprise_id, &email, &role)
                .map_err(fail)?;
            wait_for_servers();
            println!("{email} is now {role} of {enterprise_id}");
        }
        AdminCommand::Token(TokenCommand::Issue { email, ttl }) => {
            let ttl = ttl.as_deref().map(parse_ttl).transpose()?;
            let mut random = [0u8; 40];
            getrandom::fill(&mut random).map_err(|e| format!("no randomness available: {e}"))?;
            let issued = admin.issue_token(&email, ttl, random).map_err(fail)?;
            match ttl {
                Some(ttl) => println!("issued token kw_{} for {email}, valid for {ttl} s; revoke it with 'keyward admin token revoke kw_{}'", issued.id, issued.id),
                None => println!("issued token kw_{} for {email}, no expiry; revoke it with 'keyward admin token revoke kw_{}'", issued.id, issued.id),
            }
            println!("{}", issued.token);
        }
        AdminCommand::Token(TokenCommand::Revoke { token_prefix_or_id }) => {
            let id = admin.revoke_token(&token_prefix_or_id).map_err(fail)?;
            wait_for_servers();
            println!("revoked token kw_{id}");
        }
        AdminCommand::Audit {
            enterprise_id,
            since,
            json,
        } => {
            for event in admin
                .audit(&enterprise_id, since.as_deref())
                .map_err(fail)?
            {
                if json {
                    let line = serde_json::json!({
                        "at": event.at.to_rfc3339(),
                        "enterpriseId": event.enterprise_id,
                        "keyId": event.key_id,
                        "actor": event.actor,
                        "action": event.action,
                        "outcome": event.outcome,
                        "requestId": event.request_id,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{} {} {} {} {} request={}",
                        event.at,
                        event.action,
                        event.key_id,
                        event.outcome,
                        event.actor,
                        event.request_id
                    );
                }
            }
        }
    }
    Ok(())
}

/// Waits until every running server has dropped grants it read before this change
/// (they reuse one for at most `GRANT_CACHE_MILLIS`), so that when the command returns,
/// a revoked token or a lowered role is refused everywhere, and a new member accepted.
fn wait_for_servers() {
    let millis = u64::try_from(keyward_domain::GRANT_CACHE_MILLIS).unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(millis + 20));
}
