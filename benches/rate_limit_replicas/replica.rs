//! One bearerd replica of the rate-limit bench: a [`support::replica::Replica`] with admin
//! and proxy on free ports, the shared postgres store and one connection `pms` with
//! `rate_limit = { rps = 10 }`; the bench reads from its log when it re-split its budget.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::support::replica::{self, free_port};

pub struct Replica {
    pub admin: String,
    pub proxy: String,
    process: replica::Replica,
}

/// The rate-limit split a replica logged: when, its index among the live ones, how many.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub at: Instant,
    pub index: usize,
    pub live: usize,
}

impl Replica {
    pub fn spawn(index: u8, database_url: &str, token_url: &str, upstream: &str) -> Replica {
        let (admin, proxy) = (free_port(), free_port());
        let header = replica::admin_and_store(admin, database_url);
        let config = format!(
            r#"{header}
[[connection]]
name = "pms"
provider = "oauth2"
listen = "127.0.0.1:{proxy}"
upstream = "{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "bench"
client_secret = "bench-secret"
rate_limit = {{ rps = 10 }}
"#
        );
        Replica {
            admin: format!("http://127.0.0.1:{admin}"),
            proxy: format!("http://127.0.0.1:{proxy}"),
            process: replica::Replica::spawn(index, "rl-replica", &config),
        }
    }

    /// Every "rate limits split across replicas" line so far.
    pub fn splits(&self) -> Vec<Split> {
        let field = |line: &str, name: &str| -> Option<usize> {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line[start..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        self.process
            .lines_with("rate limits split across replicas")
            .into_iter()
            .filter_map(|(at, line)| {
                Some(Split {
                    at,
                    index: field(&line, "index")?,
                    live: field(&line, "live")?,
                })
            })
            .collect()
    }
}

impl Deref for Replica {
    type Target = replica::Replica;
    fn deref(&self) -> &replica::Replica {
        &self.process
    }
}

impl DerefMut for Replica {
    fn deref_mut(&mut self) -> &mut replica::Replica {
        &mut self.process
    }
}
