//! How errors reach the user: [`UsageError`] marks the user's mistakes (exit status 2), and [`one_line`] is
//! the one formatter of an error chain, for the final `bucky: error: …` line and for every per-agent or
//! per-metric report.

use std::error::Error;

/// A failure caused by the user's input rather than by bucky or the system: exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error and its causes on one line, `outer: inner: …`. A cause whose text the line already holds is
/// left out: an error that prints its source itself (and exposes it too) would otherwise repeat it.
pub(crate) fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;
    use crate::config::Addr;

    #[test]
    fn error_lines_do_not_repeat_a_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::new(whisper::Error::Io { path: "/x.wsp".into(), cause: io }).context("cannot open");
        assert_eq!(one_line(err.as_ref()), "cannot open: /x.wsp: No such file or directory");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(err.as_ref()), "outer: inner");
    }

    /// Whether an error prints its source, exposes it, or both (whisper's I/O error once did both), the line
    /// is the same.
    #[test]
    fn a_printed_source_and_an_exposed_one_read_the_same() {
        #[derive(Debug, thiserror::Error)]
        #[error("/x.wsp")]
        struct Exposed(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("/x.wsp: {0}")]
        struct Printed(std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("/x.wsp: {0}")]
        struct Both(#[source] std::io::Error);
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let want = "cannot open: /x.wsp: No such file or directory";
        assert_eq!(one_line(anyhow::Error::new(Exposed(io())).context("cannot open").as_ref()), want);
        assert_eq!(one_line(anyhow::Error::new(Printed(io())).context("cannot open").as_ref()), want);
        assert_eq!(one_line(anyhow::Error::new(Both(io())).context("cannot open").as_ref()), want);
    }

    /// An unreachable agent used to make a 250-character line naming its address three times (the client
    /// error, reqwest's "error sending request for url (…)", its causes): now once, with the root cause.
    #[test]
    fn an_unreachable_agent_is_named_once() {
        let addr = Addr { host: "127.0.0.1".into(), port: 9 };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let unreachable = || {
            let network = runtime
                .block_on(reqwest::Client::new().get(format!("http://{}/hashring", addr.authority())).send())
                .expect_err("nothing listens on port 9");
            ClientError::Unreachable { addr: addr.to_string(), what: "GET /hashring".into(), network }
        };
        let line = one_line(anyhow::Error::new(unreachable()).context("cannot list").as_ref());
        assert_eq!(line.matches("127.0.0.1:9").count(), 1, "{line}");
        assert!(line.starts_with("cannot list: 127.0.0.1:9 is unreachable (GET /hashring): "), "{line}");
        assert!(line.to_lowercase().contains("refused"), "{line}");
        assert!(line.len() < 120, "{line}");
        let alone = one_line(&unreachable());
        assert_eq!(alone.matches("127.0.0.1:9").count(), 1, "{alone}");
    }
}
