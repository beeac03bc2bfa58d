//! An error and its sources on one line, for logs and status messages.

/// `error: source: source…`, so a log line shows why something failed, not
/// only that it did. A source whose text the line already holds (many
/// errors print their source themselves) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("connecting to 10.0.0.1:9443")]
        Connect(#[source] std::io::Error),
        #[error("reading the key: {0}")]
        Read(#[source] std::io::Error),
    }

    #[test]
    fn sources_follow_once_each() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            error_chain(&Outer::Connect(refused())),
            "connecting to 10.0.0.1:9443: Connection refused"
        );
        assert_eq!(error_chain(&Outer::Read(refused())), "reading the key: Connection refused");
    }
}
