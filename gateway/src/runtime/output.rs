//! Owns the bounds on what a plugin may answer: the number and total size of warnings, audit
//! annotations and denial texts, the size of a replaced object, and the number and size of an
//! audit sink's lines. They are checked as soon as the answer is out of Wasm, before the host
//! does any other work on it (merging, JSON parsing, writing); an answer past a bound is an
//! invalid output, handled by the policy's failure policy. Must not judge what the answer means.

use super::bindings::types::{Change, Decision, Denial, Remarks};
use super::{Answer, Call, PluginFailure};

/// Warnings one answer may carry. The API server shows at most 4096 characters of warnings in
/// all, so more than this many is a plugin bug (or an attack), not information.
pub const MAX_WARNINGS: usize = 100;
/// Bytes of warnings one answer may carry, all together.
pub const MAX_WARNING_BYTES: usize = 64 << 10;
/// Audit annotations one answer may carry.
pub const MAX_ANNOTATIONS: usize = 100;
/// Bytes of audit-annotation keys and values one answer may carry, all together.
pub const MAX_ANNOTATION_BYTES: usize = 64 << 10;
/// Bytes of a denial's reason and message together: what a user reads in `kubectl`'s error.
pub const MAX_DENIAL_BYTES: usize = 32 << 10;
/// Bytes of an initializer's replaced object (or of its patch): above the API server's own 3 MiB request limit,
/// so no object it can store is refused.
pub const MAX_OBJECT_BYTES: usize = 4 << 20;
/// Lines an audit sink may return per event of its batch (an event may fan out to several
/// outputs), plus this many for the batch.
pub const MAX_EMISSIONS_PER_EVENT: usize = 8;
/// Bytes of one line an audit sink returns.
pub const MAX_EMISSION_BYTES: usize = 1 << 20;

/// Checks `answer` (to `call`) against the bounds above, in time linear in its size.
pub(super) fn check(answer: &Answer, call: &Call) -> Result<(), PluginFailure> {
    match answer {
        Answer::Verdict(verdict) => {
            remarks(&verdict.remarks)?;
            if let Decision::Denied(denial) = &verdict.decision {
                self::denial(denial)?;
            }
        }
        Answer::Mutation(mutation) => {
            remarks(&mutation.remarks)?;
            match &mutation.change {
                Change::Replaced(object) if object.len() > MAX_OBJECT_BYTES => {
                    return Err(invalid(format!(
                        "the replaced object is {} bytes; at most {MAX_OBJECT_BYTES} are accepted",
                        object.len()
                    )));
                }
                Change::Patched(patch) if patch.len() > MAX_OBJECT_BYTES => {
                    return Err(invalid(format!(
                        "the patch is {} bytes; at most {MAX_OBJECT_BYTES} are accepted",
                        patch.len()
                    )));
                }
                Change::Denied(denial) => self::denial(denial)?,
                _ => {}
            }
        }
        Answer::Emissions(lines) => {
            let events = match call {
                Call::Deliver(batch) => batch.len(),
                _ => 0,
            };
            let most = (events + 1).saturating_mul(MAX_EMISSIONS_PER_EVENT);
            if lines.len() > most {
                return Err(invalid(format!(
                    "{} lines for a batch of {events} events; at most {most} are accepted",
                    lines.len()
                )));
            }
            if let Some(line) = lines
                .iter()
                .find(|l| l.line.len() + l.output.len() > MAX_EMISSION_BYTES)
            {
                return Err(invalid(format!(
                    "a line of {} bytes; at most {MAX_EMISSION_BYTES} are accepted",
                    line.line.len() + line.output.len()
                )));
            }
        }
        // The refusal text is cut to `MAX_SETTINGS_MESSAGE` where it is read.
        Answer::SettingsAccepted => {}
    }
    Ok(())
}

fn remarks(remarks: &Remarks) -> Result<(), PluginFailure> {
    let warnings = &remarks.warnings;
    if warnings.len() > MAX_WARNINGS {
        return Err(invalid(format!(
            "{} warnings; at most {MAX_WARNINGS} are accepted",
            warnings.len()
        )));
    }
    let bytes: usize = warnings.iter().map(String::len).sum();
    if bytes > MAX_WARNING_BYTES {
        return Err(invalid(format!(
            "{bytes} bytes of warnings; at most {MAX_WARNING_BYTES} are accepted"
        )));
    }
    let annotations = &remarks.audit_annotations;
    if annotations.len() > MAX_ANNOTATIONS {
        return Err(invalid(format!(
            "{} audit annotations; at most {MAX_ANNOTATIONS} are accepted",
            annotations.len()
        )));
    }
    let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATION_BYTES {
        return Err(invalid(format!(
            "{bytes} bytes of audit annotations; at most {MAX_ANNOTATION_BYTES} are accepted"
        )));
    }
    Ok(())
}

fn denial(denial: &Denial) -> Result<(), PluginFailure> {
    let bytes = denial.reason.len() + denial.message.len();
    if bytes > MAX_DENIAL_BYTES {
        return Err(invalid(format!(
            "a denial of {bytes} bytes; at most {MAX_DENIAL_BYTES} are accepted"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> PluginFailure {
    PluginFailure::InvalidOutput(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::types::Verdict;

    fn verdict(warnings: usize, each: usize) -> Answer {
        Answer::Verdict(Verdict {
            decision: Decision::Allowed,
            remarks: Remarks {
                warnings: vec!["w".repeat(each); warnings],
                audit_annotations: Vec::new(),
            },
        })
    }

    #[test]
    fn warnings_are_bounded_in_number_and_size() {
        let call = Call::Deliver(std::sync::Arc::from(Vec::new()));
        assert!(check(&verdict(MAX_WARNINGS, 10), &call).is_ok());
        assert_eq!(
            check(&verdict(200_000, 10), &call),
            Err(PluginFailure::InvalidOutput(
                "200000 warnings; at most 100 are accepted".into()
            ))
        );
        assert!(matches!(
            check(&verdict(2, MAX_WARNING_BYTES), &call),
            Err(PluginFailure::InvalidOutput(m)) if m.contains("bytes of warnings")
        ));
    }
}
