//! How much checking each run does: the `--quick`, default (CI) and `--deep` profiles.
//!
//! An environment variable always wins over the profile's default, so a user can set
//! `PROPTEST_CASES`, `LOOM_MAX_PREEMPTIONS` or `REFLOOP_FUZZ_SECONDS` for any profile.

/// The three budget profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A local edit loop: a few cases, a low loom bound, seconds of fuzzing.
    Quick,
    /// The CI budget (also what `CI=true` runs).
    Default,
    /// The scheduled run: more cases, a higher loom bound, minutes of fuzzing.
    Deep,
}

/// Resolved budgets for one run.
#[derive(Debug, Clone)]
pub struct Budget {
    pub profile: Profile,
    /// `None` leaves `PROPTEST_CASES` unset, so each property uses its own CI default.
    pub proptest_cases: Option<u64>,
    pub loom_preemptions: u64,
    pub fuzz_seconds: u64,
    pub ci: bool,
}

impl Budget {
    pub fn from_env(profile: Profile) -> Budget {
        Budget::resolve(profile, |key| std::env::var(key).ok())
    }

    /// Resolves the budget from the profile and a variable lookup (a function so tests can
    /// pass their own environment).
    pub fn resolve(profile: Profile, var: impl Fn(&str) -> Option<String>) -> Budget {
        let number = |key: &str| var(key).and_then(|v| v.trim().parse::<u64>().ok());
        let (cases, loom, fuzz) = match profile {
            Profile::Quick => (Some(16), 2, 5),
            Profile::Default => (None, 3, 20),
            Profile::Deep => (Some(4096), 4, 600),
        };
        Budget {
            profile,
            proptest_cases: number("PROPTEST_CASES").or(cases),
            loom_preemptions: number("LOOM_MAX_PREEMPTIONS").unwrap_or(loom),
            fuzz_seconds: number("REFLOOP_FUZZ_SECONDS").unwrap_or(fuzz),
            ci: var("CI").is_some_and(|v| v == "true" || v == "1"),
        }
    }

    pub fn describe(&self) -> String {
        let profile = match self.profile {
            Profile::Quick => "quick",
            Profile::Default if self.ci => "default, CI=true",
            Profile::Default => "default",
            Profile::Deep => "deep",
        };
        let cases = match self.proptest_cases {
            Some(n) => n.to_string(),
            None => "per-test default".to_string(),
        };
        format!(
            "profile {profile}; PROPTEST_CASES={cases}; LOOM_MAX_PREEMPTIONS={}; \
             REFLOOP_FUZZ_SECONDS={}",
            self.loom_preemptions, self.fuzz_seconds
        )
    }

    /// The variables every child process gets, so each stage sees the same budget.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "LOOM_MAX_PREEMPTIONS".to_string(),
                self.loom_preemptions.to_string(),
            ),
            (
                "REFLOOP_FUZZ_SECONDS".to_string(),
                self.fuzz_seconds.to_string(),
            ),
        ];
        if let Some(cases) = self.proptest_cases {
            env.push(("PROPTEST_CASES".to_string(), cases.to_string()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_wins_over_profile_defaults() {
        let b = Budget::resolve(Profile::Deep, env(&[("PROPTEST_CASES", "7")]));
        assert_eq!(b.proptest_cases, Some(7));
        assert_eq!(b.loom_preemptions, 4);
        let b = Budget::resolve(Profile::Quick, env(&[("LOOM_MAX_PREEMPTIONS", "5")]));
        assert_eq!(b.loom_preemptions, 5);
        assert_eq!(b.fuzz_seconds, 5);
    }

    #[test]
    fn default_profile_uses_loom_bound_three_and_leaves_cases_to_tests() {
        let b = Budget::resolve(Profile::Default, env(&[("CI", "true")]));
        assert_eq!(b.loom_preemptions, 3);
        assert_eq!(b.proptest_cases, None);
        assert!(b.ci);
        assert!(!b.env().iter().any(|(k, _)| k == "PROPTEST_CASES"));
    }

    #[test]
    fn deep_profile_checks_more_than_default_and_quick_less() {
        let none = env(&[]);
        let (q, d, x) = (
            Budget::resolve(Profile::Quick, &none),
            Budget::resolve(Profile::Default, &none),
            Budget::resolve(Profile::Deep, &none),
        );
        assert!(q.fuzz_seconds < d.fuzz_seconds && d.fuzz_seconds < x.fuzz_seconds);
        assert!(q.loom_preemptions < d.loom_preemptions && d.loom_preemptions < x.loom_preemptions);
    }
}
