//! Errors callers may want to match on. Everything else is `anyhow` with context; these typed
//! errors travel inside `anyhow::Error` and can be recovered with `err.downcast_ref::<QiError>()`.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum QiError {
    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture { arch: String, supported: String },
    #[error("unknown hook '{name}' ({hint})")]
    UnknownHook { name: String, hint: String },
    #[error("token id {id} at batch {batch}, position {pos} is out of vocabulary (vocab size {vocab})")]
    TokenOutOfVocab { id: u32, batch: usize, pos: usize, vocab: usize },
    #[error("{}: missing tensor '{tensor}'", file.display())]
    MissingTensor { file: PathBuf, tensor: String },
    #[error("{}: tensor '{tensor}' has shape {found:?}, but the config implies {expected:?}", file.display())]
    ShapeMismatch { file: PathBuf, tensor: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("invalid {what} '{value}': {reason}")]
    InvalidArgument { what: String, value: String, reason: String },
}

impl QiError {
    pub fn invalid(what: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Self {
        QiError::InvalidArgument { what: what.into(), value: value.to_string(), reason: reason.into() }
    }
}
