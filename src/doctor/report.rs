//! What a probe found: one [`Check`] per finding, rendered as text or JSON.

use std::fmt;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The deployment does what browsers need.
    Ok,
    /// Works, but something will bite later (or degrade performance).
    Warn,
    /// Browsers will fail here.
    Fail,
}

impl Outcome {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One finding: which check, how it came out, why, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// The check's name: `reach`, `secure-context`, `port`, `isolation`, `cors`, `sse`,
    /// `websocket`, `http2` or `host`. A check may report several findings under one name.
    pub name: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was observed.
    pub cause: String,
    /// What to change; empty when there is nothing to change.
    pub fix: String,
}

impl Check {
    pub(crate) fn ok(name: &'static str, cause: impl Into<String>) -> Self {
        Check {
            name,
            outcome: Outcome::Ok,
            cause: cause.into(),
            fix: String::new(),
        }
    }

    pub(crate) fn warn(
        name: &'static str,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name,
            outcome: Outcome::Warn,
            cause: cause.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn fail(
        name: &'static str,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name,
            outcome: Outcome::Fail,
            cause: cause.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Check {
    /// `ok|warn|fail  name — cause; fix` (without `; fix` when there is nothing to change).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {} — {}", self.outcome, self.name, self.cause)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// Everything a [`Probe`](super::Probe) found, in the order the checks ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    pub(crate) fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// All findings, in the order the checks ran.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The findings of the check called `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks.iter().filter(move |c| c.name == name)
    }

    /// The worst outcome of the check called `name`, `None` when it did not run.
    pub fn outcome(&self, name: &str) -> Option<Outcome> {
        self.named(name).map(|c| c.outcome).max()
    }

    /// Whether any finding is a [`Outcome::Fail`].
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    /// The worst outcome over all findings ([`Outcome::Ok`] for an empty report).
    pub fn worst(&self) -> Outcome {
        self.checks
            .iter()
            .map(|c| c.outcome)
            .max()
            .unwrap_or(Outcome::Ok)
    }

    /// The report as one JSON object:
    /// `{"outcome":"ok|warn|fail","checks":[{"name":…,"outcome":…,"cause":…,"fix":…},…]}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"outcome\":");
        json_string(&mut out, self.worst().as_str());
        out.push_str(",\"checks\":[");
        for (i, c) in self.checks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_string(&mut out, c.name);
            out.push_str(",\"outcome\":");
            json_string(&mut out, c.outcome.as_str());
            out.push_str(",\"cause\":");
            json_string(&mut out, &c.cause);
            out.push_str(",\"fix\":");
            json_string(&mut out, &c.fix);
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

impl fmt::Display for Report {
    /// One line per finding (see [`Check`]'s `Display`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_quotes_backslashes_and_controls() {
        let mut r = Report::default();
        r.push(Check::fail("cors", "a \"b\" \\ c\n\u{1}", "é"));
        assert_eq!(
            r.to_json(),
            "{\"outcome\":\"fail\",\"checks\":[{\"name\":\"cors\",\"outcome\":\"fail\",\
             \"cause\":\"a \\\"b\\\" \\\\ c\\n\\u0001\",\"fix\":\"é\"}]}"
        );
    }

    #[test]
    fn display_is_one_line_per_finding() {
        let mut r = Report::default();
        r.push(Check::ok("port", "8080 is not a bad port"));
        r.push(Check::warn(
            "host",
            "answered 200",
            "add HostAllowlistLayer",
        ));
        assert_eq!(
            r.to_string(),
            "ok    port — 8080 is not a bad port\nwarn  host — answered 200; add HostAllowlistLayer\n"
        );
        assert!(!r.failed());
        assert_eq!(r.worst(), Outcome::Warn);
        assert_eq!(r.outcome("host"), Some(Outcome::Warn));
        assert_eq!(r.outcome("sse"), None);
    }
}
