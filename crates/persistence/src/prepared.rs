//! Raw PostgreSQL statements that each connection prepares once.
//!
//! Diesel's `sql_query` marks itself unsafe to cache, so PostgreSQL parses, analyses and
//! plans it again on every execution; for the registration statement (four CTEs) that
//! was about a quarter of the database's CPU per registration. [`Prepared`] renders the
//! same text with its `$n` parameters as ordinary binds, which Diesel's statement cache
//! keys by the rendered text: the first execution on a connection prepares it, later
//! ones only bind and execute.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// One parameter value of a [`Prepared`] statement.
pub(crate) enum Bind<'a> {
    Text(&'a str),
    OptionalText(Option<&'a str>),
    BigInt(i64),
    Texts(&'a [String]),
    BigInts(&'a [i64]),
}

/// `sql`, whose `$1`, `$2`, … name `binds` in order (a parameter may appear more than
/// once). Every `$` followed by digits is a parameter: the statements here use no
/// dollar quoting.
pub(crate) struct Prepared<'a> {
    sql: &'static str,
    binds: &'a [Bind<'a>],
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(sql: &'static str, binds: &'a [Bind<'a>]) -> Self {
        Self { sql, binds }
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared<'_> {}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                out.push_sql("$");
                rest = after;
                continue;
            }
            let bind = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("parameter ${} has no value", &after[..digits]).into(),
                    )
                })?;
            match bind {
                Bind::Text(value) => out.push_bind_param::<Text, str>(value)?,
                Bind::OptionalText(value) => {
                    out.push_bind_param::<Nullable<Text>, Option<&str>>(value)?;
                }
                Bind::BigInt(value) => out.push_bind_param::<BigInt, i64>(value)?,
                Bind::Texts(values) => out.push_bind_param::<Array<Text>, [String]>(values)?,
                Bind::BigInts(values) => out.push_bind_param::<Array<BigInt>, [i64]>(values)?,
            }
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_binds_in_order_and_may_repeat() {
        let texts = vec!["x".to_owned()];
        let binds = [Bind::Text("a"), Bind::BigInt(7), Bind::Texts(&texts)];
        let query = Prepared::new("SELECT $2, $1::text, $2 + 1, $3 WHERE price > '$'", &binds);
        let rendered = diesel::debug_query::<Pg, _>(&query).to_string();
        assert_eq!(
            rendered,
            "SELECT $1, $2::text, $3 + 1, $4 WHERE price > '$' -- binds: [7, \"a\", 7, [\"x\"]]"
        );
    }

    #[test]
    fn a_parameter_without_a_value_is_an_error() {
        let binds = [Bind::BigInt(1)];
        let query = Prepared::new("SELECT $1, $2", &binds);
        let mut builder = diesel::pg::PgQueryBuilder::default();
        assert!(query.to_sql(&mut builder, &Pg).is_err());
    }
}
