//! The README's `sam local` section read as a script: each shell line becomes a [`Step`] the
//! runner knows, or the run fails.

use crate::Function;

/// One command of the README's section, as the runner understands it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// Ran by `make sam-local` before this runner (`make sam-build`).
    Prerequisite(String),
    /// A server that keeps running (`sam-deps`, `sam local start-api`).
    Server(String),
    /// `export K=V …`.
    Export(Vec<(String, String)>),
    /// `sam local invoke <LogicalId> --event events/<file>`.
    Invoke {
        line: String,
        function: String,
        event: String,
    },
    /// `curl …` against the start-api.
    Curl(String),
}

/// The commands of the README section headed `heading`, in order.
pub(super) fn readme_commands(readme: &str, heading: &str) -> Result<Vec<String>, String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == heading)
        .ok_or_else(|| format!("README has no heading {heading:?}"))?;
    let mut commands = Vec::new();
    let mut in_code = false;
    for line in lines {
        if !in_code && line.starts_with('#') {
            break;
        }
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let command = strip_comment(line).trim().to_string();
        if !command.is_empty() {
            commands.push(command);
        }
    }
    if commands.is_empty() {
        return Err(format!("README section {heading:?} has no commands"));
    }
    Ok(commands)
}

/// A shell line without its trailing `# comment` (outside quotes).
pub(super) fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(char::is_whitespace)) => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

pub(super) fn parse_step(line: &str) -> Result<Step, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["make", "sam-build", ..] => Ok(Step::Prerequisite(line.to_string())),
        ["cargo", "run", .., "sam-deps"] => Ok(Step::Server(line.to_string())),
        ["sam", "local", "start-api", ..] => Ok(Step::Server(line.to_string())),
        ["export", pairs @ ..] => pairs
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("not KEY=VALUE: {pair} in {line}"))
            })
            .collect::<Result<_, _>>()
            .map(Step::Export),
        ["sam", "local", "invoke", function, rest @ ..] => {
            let event = rest
                .windows(2)
                .find(|w| w[0] == "--event")
                .map(|w| w[1].trim_start_matches("events/").to_string())
                .ok_or_else(|| format!("no --event in {line}"))?;
            Ok(Step::Invoke {
                line: line.to_string(),
                function: function.to_string(),
                event,
            })
        }
        ["curl", ..] => Ok(Step::Curl(line.to_string())),
        _ => Err(format!(
            "README command not known to `local-stack sam-local`, so not tested: {line}"
        )),
    }
}

pub(super) fn logical_id(function: Function) -> &'static str {
    match function {
        Function::StkPush => "StkPushFunction",
        Function::StkCallback => "StkCallbackFunction",
        Function::PaymentStatus => "PaymentStatusFunction",
        Function::Reconcile => "ReconcileFunction",
        Function::PaymentEvents => "PaymentEventsFunction",
        Function::WebhookDelivery => "WebhookDeliveryFunction",
    }
}
