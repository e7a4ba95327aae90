//! Who is calling: the IAM principal API Gateway's authorizer verified. An `Idempotency-Key` is
//! the caller's own (two callers using the same key are two requests), and a payment is shown
//! only to the caller that asked for it.

/// The principal of an IAM `userArn`: a user as it is; for an assumed-role session, the role
/// (its sessions are one caller, so a retry with fresh credentials still finds its key).
pub fn principal(user_arn: &str) -> String {
    let Some((prefix, rest)) = user_arn.split_once(":assumed-role/") else {
        return user_arn.to_owned();
    };
    match rest.split_once('/') {
        Some((role, _session)) => format!("{prefix}:assumed-role/{role}"),
        None => user_arn.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_s_sessions_are_one_caller_and_users_stay_themselves() {
        assert_eq!(
            principal("arn:aws:sts::123456789012:assumed-role/checkout/i-0abc"),
            "arn:aws:sts::123456789012:assumed-role/checkout"
        );
        assert_eq!(
            principal("arn:aws:sts::123456789012:assumed-role/checkout/another-session"),
            principal("arn:aws:sts::123456789012:assumed-role/checkout/i-0abc")
        );
        assert_ne!(
            principal("arn:aws:sts::123456789012:assumed-role/refunds/i-0abc"),
            principal("arn:aws:sts::123456789012:assumed-role/checkout/i-0abc")
        );
        for arn in [
            "arn:aws:iam::123456789012:user/shop",
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:assumed-role/no-session",
        ] {
            assert_eq!(principal(arn), arn);
        }
    }
}
