//! Errors of the study's database side. Each names the problem so pages can show it as is.

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The request is wrong (bad set-up, bad rating, unknown description…): 400.
    #[error("{0}")]
    Invalid(String),
    /// No such study, rater link or task, or not this rater's: 404.
    #[error("{0}")]
    NotFound(String),
    /// A revoked rater link, or a study that is not open: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with stored data (e.g. an already answered task with another key): 409.
    #[error("{0}")]
    Conflict(String),
    /// Too many wrong admin secrets from this client: 429, with how long to wait.
    #[error("too many wrong admin secrets from this address; try again in {} minute(s)", retry_after.as_secs().div_ceil(60).max(1))]
    TooManyAttempts { retry_after: std::time::Duration },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StudyError {
    /// The HTTP status a page or endpoint answers with.
    pub fn status(&self) -> u16 {
        match self {
            StudyError::Invalid(_) => 400,
            StudyError::NotFound(_) => 404,
            StudyError::Forbidden(_) => 403,
            StudyError::Conflict(_) => 409,
            StudyError::TooManyAttempts { .. } => 429,
            StudyError::Db(_) => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, StudyError>;
