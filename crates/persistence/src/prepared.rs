//! Raw statements that each connection prepares once.
//!
//! Diesel's `sql_query` and every `diesel::update` mark themselves unsafe to cache, so
//! the database parses (and PostgreSQL plans) them again on every execution; for the
//! PostgreSQL registration statement (four CTEs) that was about a quarter of the
//! database's CPU per registration, and on SQLite each transaction's `BEGIN` and
//! `COMMIT` and each replay batch's key stamps were parsed anew. [`Prepared`] renders
//! the same text with its `$n` parameters as ordinary binds (`$n` on PostgreSQL, `?`
//! on SQLite), which Diesel's statement cache keys by the rendered text: the first
//! execution on a connection prepares it, later ones only bind and execute.

use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Untyped};
use diesel::sqlite::Sqlite;
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

impl<'a> Prepared<'a> {
    /// Pushes the text with each `$n` as a bind of `binds[n - 1]`, through `bind`.
    fn render<'b, DB: Backend>(
        &'b self,
        mut out: AstPass<'_, 'b, DB>,
        bind: impl Fn(&mut AstPass<'_, 'b, DB>, &'b Bind<'a>) -> QueryResult<()>,
    ) -> QueryResult<()> {
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
            let value = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("parameter ${} has no value", &after[..digits]).into(),
                    )
                })?;
            bind(&mut out, value)?;
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.render(out, |out, value| match value {
            Bind::Text(value) => out.push_bind_param::<Text, str>(value),
            Bind::OptionalText(value) => out.push_bind_param::<Nullable<Text>, Option<&str>>(value),
            Bind::BigInt(value) => out.push_bind_param::<BigInt, i64>(value),
            Bind::Texts(values) => out.push_bind_param::<Array<Text>, [String]>(values),
            Bind::BigInts(values) => out.push_bind_param::<Array<BigInt>, [i64]>(values),
        })
    }
}

/// SQLite has no arrays: a statement with an array parameter is an error there.
impl QueryFragment<Sqlite> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.render(out, |out, value| match value {
            Bind::Text(value) => out.push_bind_param::<Text, str>(value),
            Bind::OptionalText(value) => out.push_bind_param::<Nullable<Text>, Option<&str>>(value),
            Bind::BigInt(value) => out.push_bind_param::<BigInt, i64>(value),
            Bind::Texts(_) | Bind::BigInts(_) => Err(diesel::result::Error::QueryBuilderError(
                "SQLite statements take no array parameters".into(),
            )),
        })
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

    #[test]
    fn on_sqlite_parameters_become_positional_binds() {
        let binds = [Bind::Text("a"), Bind::BigInt(7)];
        let query = Prepared::new("SELECT $2, $1, $2 + 1", &binds);
        let rendered = diesel::debug_query::<Sqlite, _>(&query).to_string();
        assert_eq!(rendered, "SELECT ?, ?, ? + 1 -- binds: [7, \"a\", 7]");
    }

    #[test]
    fn on_sqlite_an_array_parameter_is_an_error() {
        let texts = vec!["x".to_owned()];
        let binds = [Bind::Texts(&texts)];
        let query = Prepared::new("SELECT $1", &binds);
        let mut builder = diesel::sqlite::SqliteQueryBuilder::new();
        assert!(query.to_sql(&mut builder, &Sqlite).is_err());
    }

    #[test]
    fn on_sqlite_a_statement_runs_with_its_binds_each_time() {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)")
            .unwrap();
        for (k, v) in [("a", 1), ("b", 2), ("a", 3)] {
            let binds = [Bind::Text(k), Bind::BigInt(v)];
            Prepared::new(
                "INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2",
                &binds,
            )
            .execute(&mut conn)
            .unwrap();
        }
        #[derive(diesel::QueryableByName)]
        struct Total {
            #[diesel(sql_type = BigInt)]
            total: i64,
        }
        let total: Total = diesel::sql_query("SELECT SUM(v) AS total FROM t")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(total.total, 5);
    }
}
