//! How failures read to the user: a transport error with its whole cause chain, a gRPC
//! status as a short code name and its message.

/// The whole source chain: tonic's own message is only "transport error".
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Layers often repeat their source's message; print each once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = status.code();
    let detail = match std::error::Error::source(&status) {
        Some(source) if status.message().is_empty() => causes(source),
        _ => status.message().to_owned(),
    };
    anyhow::anyhow!("{}: {detail}", code_name(code))
}

/// Short names for gRPC codes, as users see them in kubectl-style messages.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Aborted => "aborted (version conflict)",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource exhausted",
        Code::DeadlineExceeded => "deadline exceeded",
        _ => "error",
    }
}
