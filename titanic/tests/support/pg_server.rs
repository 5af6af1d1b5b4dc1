//! The PostgreSQL server the tests use: `TITANIC_PG_URL` (`.ci/run` starts one with
//! scripts/titanic-pg.sh). Each test gets a schema of its own, dropped at the end. Without the
//! variable a test is skipped with a message, except under `CI=true`, where it fails.
#![allow(dead_code, clippy::unwrap_used)]

use rand::Rng;

pub struct TestDatabase {
    base: String,
    schema: String,
    /// The URL with the test's schema as its search path.
    pub url: String,
}

impl TestDatabase {
    /// `None` (and a message) when there is no server to test against.
    pub fn new(test: &str) -> Option<TestDatabase> {
        let Ok(base) = std::env::var("TITANIC_PG_URL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: TITANIC_PG_URL is not set, and CI=true: the PostgreSQL tests must run \
                 (.ci/run starts a server with scripts/titanic-pg.sh)"
            );
            eprintln!(
                "skipped {test}: TITANIC_PG_URL is not set \
                 (`scripts/titanic-pg.sh start DIR` starts a server and prints one)"
            );
            return None;
        };
        let schema = format!("test_{:016x}", rand::rng().random::<u64>());
        let mut client = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some(TestDatabase { base, schema, url })
    }

    /// A plain connection into the test's schema.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}
