//! Programs the tests start as their own processes (the examples, real upstreams): each in a
//! process group of its own, its output read line by line, the whole group killed on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A running program; dropping it kills its process group.
pub struct Process {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// The last lines it printed, for failure messages.
    tail: VecDeque<String>,
    /// Whether the leader was waited for (its pid may then belong to someone else).
    reaped: bool,
}

/// The binary of example `name`, built by `cargo test` along with the tests (run one test file
/// alone with `--test NAME` and build it first: `cargo build --all-features --example NAME`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --all-features --example {name}` (a whole `cargo test` \
         builds it)",
        bin.display()
    );
    bin
}

impl Process {
    /// Starts `program` with `args` and extra environment `envs`, in `dir` when given; stdout and
    /// stderr are both read.
    pub fn start(
        program: impl AsRef<Path>,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Process {
        let program = program.as_ref();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        fn pump(stream: impl Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
            std::thread::spawn(move || {
                // Bounded: a program that prints forever stops being read, not the test.
                for line in BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                    .take(100_000)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        pump(stdout, tx.clone());
        pump(stderr, tx);
        Process {
            name,
            child,
            lines,
            tail: VecDeque::new(),
            reaped: false,
        }
    }

    /// Waits up to `timeout` for a line for which `find` returns something, and returns it.
    /// Panics with the program's last lines when none came, or when it exited.
    pub fn wait_for<T>(&mut self, timeout: Duration, mut find: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if std::env::var_os("UPSTREAM_LOG").is_some() {
                        eprintln!("[{}] {line}", self.name);
                    }
                    let found = find(&line);
                    if self.tail.len() == 40 {
                        self.tail.pop_front();
                    }
                    self.tail.push_back(line);
                    if let Some(v) = found {
                        return v;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.reaped = true;
                        let tail = self.tail();
                        panic!(
                            "{} exited ({status}) before saying what was awaited; its last lines:\n{tail}",
                            self.name
                        );
                    }
                }
            }
        }
        let tail = self.tail();
        panic!(
            "{} did not say what was awaited within {timeout:?}; its last lines:\n{tail}",
            self.name
        );
    }

    /// Reads what the program printed since, without waiting; returns the last lines.
    pub fn tail(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            if self.tail.len() == 40 {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // The whole group: code-server and Vite start children of their own. `--` keeps the
            // negative group id from being read as an option; only a group this test started
            // (its leader's pid, never 0 or 1) is named.
            let group = self.child.id();
            // Until it is waited for, the leader's pid (alive or a zombie) stays this group's.
            if group > 1 && !self.reaped {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{group}")])
                    .status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
