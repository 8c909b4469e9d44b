//! A PostgreSQL schema of the benchmark's own per run (`--journal-url`):
//! each run's node gets a fresh, empty journal in the database it is given,
//! as it gets a fresh data directory with SQLite, and nothing of the
//! user's is touched: the node's tables are created in the run's schema
//! (its connection's `search_path`), which is dropped after the run.

use postgres::{Client, NoTls};

use super::BenchError;

/// A schema created for one run, dropped (with what the node made in it)
/// when this is dropped.
pub struct ScratchSchema {
    client: Client,
    name: String,
    /// The connection string the node uses: the one given, with this
    /// schema as its `search_path`.
    pub url: String,
}

impl std::fmt::Debug for ScratchSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScratchSchema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ScratchSchema {
    /// Creates the schema `name` in the database at `url`.
    pub fn create(url: &str, name: &str) -> Result<Self, BenchError> {
        let failed = |what: &str, e: postgres::Error| {
            BenchError::Protocol(format!(
                "--journal-url: cannot {what}: {}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_owned())
            ))
        };
        let mut client = Client::connect(url, NoTls).map_err(|e| failed("connect", e))?;
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning;
                 DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .map_err(|e| failed(&format!("create the schema {name}"), e))?;
        Ok(Self {
            client,
            name: name.to_owned(),
            url: with_search_path(url, name),
        })
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// `url` with `schema` as its connections' `search_path`: a query
/// parameter of a `postgres://` URL, a pair of a `key=value` string.
fn with_search_path(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let joint = if url.contains('?') { '&' } else { '?' };
        format!("{url}{joint}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_path_is_set_in_either_form() {
        for (url, wanted) in [
            (
                "postgres://u@h/db",
                "postgres://u@h/db?options=-c%20search_path%3Ds1",
            ),
            (
                "postgresql://u@h/db?sslmode=disable",
                "postgresql://u@h/db?sslmode=disable&options=-c%20search_path%3Ds1",
            ),
            (
                "host=/tmp dbname=db",
                "host=/tmp dbname=db options='-c search_path=s1'",
            ),
        ] {
            let got = with_search_path(url, "s1");
            assert_eq!(got, wanted);
            let config: postgres::Config = got.parse().expect("parses");
            assert_eq!(config.get_options(), Some("-c search_path=s1"));
        }
    }
}
