//! A TCP relay to PostgreSQL that a test or benchmark turns on: a real database that is
//! down, then back, without restarting the daemon that uses it. (Shared by the tests'
//! rig and the benchmarks.)

/// A TCP relay on a loopback port to PostgreSQL at 127.0.0.1:5432, which the test turns
/// off and on: a real database that is down, then back.
pub struct Relay {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// A relay that is not listening yet (the database is "down").
    pub fn down() -> Relay {
        Relay {
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port(),
            task: None,
        }
    }

    /// `url` (a database at 127.0.0.1:5432) as reached through the relay.
    pub fn url(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    /// Starts relaying; connections made from now on reach PostgreSQL.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("binding the relay's port");
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when the task is aborted) ends every relayed connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
