//! What a kernel can do by configuration, read from its `.config`: a
//! fact of the kernel that suites (a case's expected outcome) and explore
//! (the model's alphabet and predictions) follow, never a finding.
//!
//! In: the text of a kernel's `.config` (`Manifest::config`). Out: [`Caps`].

use serde::{Deserialize, Serialize};

/// What the kernel can do by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    /// fmod_ret needs its target on the error-injection list, which
    /// `CONFIG_FUNCTION_ERROR_INJECTION` makes (Debian's own kernels leave
    /// it unset: the verifier refuses fmod_ret with EINVAL).
    pub fmod_ret: bool,
}

impl Caps {
    /// A kernel that can do everything the alphabet has.
    pub const ALL: Caps = Caps { fmod_ret: true };

    /// The capabilities of the kernel whose `.config` is `text`.
    pub fn of_config(text: &str) -> Caps {
        Caps {
            fmod_ret: text
                .lines()
                .any(|l| l.trim() == "CONFIG_FUNCTION_ERROR_INJECTION=y"),
        }
    }

    /// The capabilities of the kernel whose `.config` is at `path`.
    pub fn of_file(path: &std::path::Path) -> anyhow::Result<Caps> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the kernel's config {}", path.display()))?;
        Ok(Caps::of_config(&text))
    }

    /// What the kernel cannot do, for people (empty: nothing).
    pub fn missing(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.fmod_ret {
            v.push("fmod_ret (CONFIG_FUNCTION_ERROR_INJECTION is not set)");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmod_ret_needs_function_error_injection() {
        assert!(Caps::of_config("CONFIG_FUNCTION_ERROR_INJECTION=y\n").fmod_ret);
        assert!(!Caps::of_config("# CONFIG_FUNCTION_ERROR_INJECTION is not set\n").fmod_ret);
        assert!(!Caps::of_config("").fmod_ret);
        assert!(Caps::ALL.missing().is_empty());
    }
}
