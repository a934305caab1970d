//! Gateway replicas as child processes of a test binary without libtest's harness: the binary runs
//! itself again with `--gateway …`, and the child serves until the parent lets it go.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A replica: a copy of the running test binary started with `args`, killed on drop.
pub struct Replica {
    child: Child,
    /// Where it listens, as it announced.
    pub addr: SocketAddr,
}

impl Replica {
    /// Starts the copy and waits (at most 60 s) for the address it announces with [`announce`].
    pub fn spawn(args: &[&str]) -> Replica {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a gateway process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().take(100) {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                    return;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway process announced its address");
        Replica { child, addr }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the child: tells the parent where it listens, then serves until the parent closes its
/// standard input (or two minutes pass).
pub async fn announce(addr: SocketAddr) {
    println!("LISTENING {addr}");
    std::io::stdout().flush().unwrap();
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(120), stdin_closed).await;
}

/// The `main` of a replica test binary (no libtest harness): with `--gateway REDIS_URL ADDR` it is
/// a replica and runs `gateway`; otherwise it runs the test `name`, honouring libtest's `--list`
/// and name filter as `cargo test` passes them.
pub fn main<G, T>(
    name: &str,
    gateway: impl FnOnce(String, SocketAddr) -> G,
    test: impl FnOnce() -> T,
) where
    G: std::future::Future<Output = ()>,
    T: std::future::Future<Output = ()>,
{
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("--gateway") {
        runtime.block_on(gateway(args[2].clone(), args[3].parse().unwrap()));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return;
    }
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        println!("running 0 tests (filtered out: {name})");
        return;
    }
    runtime.block_on(test());
    println!("test {name} ... ok");
}
