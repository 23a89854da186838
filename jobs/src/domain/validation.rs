//! Collects every offending field of a request, so a client sees all of them at once.

/// The fields that failed validation, each with a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid field(s)", .0.len())]
pub struct ValidationErrors(pub Vec<(String, String)>);

impl ValidationErrors {
    /// Ok when nothing was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// A validation pass over one request.
#[derive(Debug, Default)]
pub struct Check {
    errors: ValidationErrors,
}

impl Check {
    /// A new, empty pass.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records `message` for `field` unless `ok`.
    pub fn ensure(
        &mut self,
        ok: bool,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Self {
        if !ok {
            self.errors.0.push((field.into(), message.into()));
        }
        self
    }
    /// Records `value` outside `min..=max`.
    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        field: &str,
        value: T,
        min: T,
        max: T,
    ) -> &mut Self {
        self.ensure(
            value >= min && value <= max,
            field,
            format!("must be between {min} and {max}"),
        )
    }
    /// Merges a nested result under a prefix.
    pub fn nested(&mut self, prefix: &str, result: Result<(), ValidationErrors>) -> &mut Self {
        if let Err(e) = result {
            for (f, m) in e.0 {
                self.errors.0.push((format!("{prefix}.{f}"), m));
            }
        }
        self
    }
    /// The outcome.
    pub fn finish(self) -> Result<(), ValidationErrors> {
        self.errors.into_result()
    }
}

/// `^prefix_[A-Za-z0-9_-]+$`, at most 128 characters.
pub(crate) fn is_prefixed_id(s: &str, prefix: &str) -> bool {
    s.len() <= 128
        && s.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// 3–100 characters of `[A-Za-z0-9 _-]`.
pub(crate) fn is_display_name(s: &str) -> bool {
    (3..=100).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_' || c == '-')
}
