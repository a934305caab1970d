//! A `redis-server` child process on a free loopback port, for the tests of state shared by
//! gateway replicas.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:{port}/`.
    pub url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// Starts a server without persistence; panics when `redis-server` is not installed
    /// (`apt-get install redis-server`; `./scripts/test` does) or does not answer.
    pub async fn start() -> RedisServer {
        // A free port can be taken by another test between the probe and the server's bind: a
        // server that exits is retried on a new port, a few times.
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is required for this test (apt-get install redis-server)");
            let mut server = RedisServer {
                child,
                url: format!("redis://127.0.0.1:{port}/"),
            };
            if server.ready(port).await {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Whether the server answers `PING` with `+PONG` within 10 s (false when it exits first).
    async fn ready(&mut self, port: u16) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut buf = [0u8; 7];
                let pong = async {
                    conn.write_all(b"PING\r\n").await?;
                    conn.read_exact(&mut buf).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), pong).await {
                    if &buf == b"+PONG\r\n" {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
