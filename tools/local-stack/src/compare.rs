//! Comparing what the API Gateway stand-in and `sam local start-api` hand a function for the same
//! request (the `compare-gateway` binary runs both).
//!
//! Each exchange becomes one JSON document, `{"response": {status, headers}, "event": …}` when
//! the answer is the echoed event, `{"response": …, "body": …}` otherwise (the body as JSON
//! when it is JSON, so formatting does not count, else as text). What legitimately
//! varies per request or per listener is normalised away, the rest is compared field by field
//! (JSON pointers), and every remaining difference must be one of [`ACCEPTED`], each with its
//! reason. An entry that matches nothing is reported too, so the table cannot outlive the
//! differences it explains.

use std::path::Path;

use chrono::DateTime;
use serde_json::{json, Map, Value};

/// The response headers compared; the others (date, server, length) say nothing about the event.
pub const RESPONSE_HEADERS: [&str; 2] = ["content-type", "apigw-requestid"];

/// One exchange as a comparable document. `headers` are (lowercase name, value) pairs.
pub fn exchange_document(status: u16, headers: &[(String, String)], body: &[u8]) -> Value {
    let mut kept = Map::new();
    for (name, value) in headers {
        if RESPONSE_HEADERS.contains(&name.as_str()) {
            kept.insert(name.clone(), json!(value));
        }
    }
    let mut document = json!({ "response": { "status": status, "headers": kept } });
    match serde_json::from_slice::<Value>(body) {
        Ok(event) if status == 200 && event.get("requestContext").is_some() => {
            document["event"] = event;
        }
        Ok(json) => document["body"] = json,
        Err(_) => document["body"] = json!(String::from_utf8_lossy(body)),
    }
    document
}

/// Replaces what differs for every request or listener by a marker, in place:
/// request ids, the request time (its format is kept: a wrong format stays visible), the
/// listener's own `host:port` and port. Header names are lowercased; the names that were not
/// are returned, since their spelling is itself a difference.
pub fn normalise(document: &mut Value, listener: &str, now_ms: i64) -> Vec<String> {
    let port = listener.rsplit_once(':').map_or("", |(_, port)| port);
    replace_strings(document, listener, "<listener>");
    if let Some(id) = document.pointer_mut("/response/headers/apigw-requestid") {
        *id = json!("<request id>");
    }
    let Some(event) = document.get_mut("event") else {
        return Vec::new();
    };
    let mut renamed = Vec::new();
    if let Some(headers) = event.get_mut("headers").and_then(Value::as_object_mut) {
        let original = std::mem::take(headers);
        for (name, value) in original {
            let lower = name.to_ascii_lowercase();
            if lower != name {
                renamed.push(name);
            }
            headers.insert(lower, value);
        }
        if let Some(forwarded_port) = headers.get_mut("x-forwarded-port") {
            if forwarded_port.as_str() == Some(port) {
                *forwarded_port = json!("<listener port>");
            }
        }
    }
    let Some(context) = event.get_mut("requestContext") else {
        return renamed;
    };
    if let Some(id) = context.get_mut("requestId") {
        *id = json!("<request id>");
    }
    if let Some(time) = context.get_mut("time") {
        let parsed = time
            .as_str()
            .is_some_and(|t| DateTime::parse_from_str(t, "%d/%b/%Y:%H:%M:%S %z").is_ok());
        if parsed {
            *time = json!("<dd/Mon/yyyy:HH:MM:SS +zone>");
        }
    }
    if let Some(epoch) = context.get_mut("timeEpoch") {
        const DAY_MS: i64 = 86_400_000;
        match epoch.as_i64() {
            Some(t) if (t - now_ms).abs() < DAY_MS => *epoch = json!("<epoch milliseconds>"),
            Some(t) if (t - now_ms / 1000).abs() < DAY_MS / 1000 => {
                *epoch = json!("<epoch seconds>")
            }
            _ => {}
        }
    }
    renamed
}

fn replace_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}

/// A field whose value differs, or that only one side has.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub pointer: String,
    pub stand_in: Option<Value>,
    pub sam: Option<Value>,
}

/// Compares two documents leaf by leaf (arrays as a whole). Returns how many fields were
/// compared and the differences, in pointer order.
pub fn diff(stand_in: &Value, sam: &Value) -> (usize, Vec<Difference>) {
    let mut differences = Vec::new();
    let fields = diff_at("", Some(stand_in), Some(sam), &mut differences);
    (fields, differences)
}

fn diff_at(
    pointer: &str,
    stand_in: Option<&Value>,
    sam: Option<&Value>,
    out: &mut Vec<Difference>,
) -> usize {
    if let (Some(Value::Object(a)), Some(Value::Object(b))) = (stand_in, sam) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        return keys
            .into_iter()
            .map(|key| {
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                diff_at(&child, a.get(key), b.get(key), out)
            })
            .sum();
    }
    if stand_in != sam {
        out.push(Difference {
            pointer: pointer.to_string(),
            stand_in: stand_in.cloned(),
            sam: sam.cloned(),
        });
    }
    1
}

/// What one side must have at an accepted difference.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Absent,
    Present,
    /// Exactly this value, as JSON text.
    Is(&'static str),
}

impl Side {
    fn matches(self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Side::Absent, None) | (Side::Present, Some(_)) => true,
            (Side::Is(text), Some(value)) => {
                serde_json::from_str::<Value>(text).is_ok_and(|wanted| &wanted == value)
            }
            _ => false,
        }
    }
}

/// A difference that is understood and kept.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// Only for these requests (probes' names); empty: for any.
    pub requests: &'static [&'static str],
    /// A JSON pointer; a `*` segment matches any one segment.
    pub pointer: &'static str,
    pub stand_in: Side,
    pub sam: Side,
    /// A further condition on the two values, where "present on both sides" says too little.
    pub also: Option<fn(&Value, &Value) -> bool>,
    pub reason: &'static str,
}

impl Accepted {
    fn matches(&self, request: &str, difference: &Difference) -> bool {
        (self.requests.is_empty() || self.requests.contains(&request))
            && pointer_matches(self.pointer, &difference.pointer)
            && self.stand_in.matches(difference.stand_in.as_ref())
            && self.sam.matches(difference.sam.as_ref())
            && match (self.also, &difference.stand_in, &difference.sam) {
                (None, _, _) => true,
                (Some(check), Some(a), Some(b)) => check(a, b),
                (Some(_), _, _) => false,
            }
    }
}

fn pointer_matches(pattern: &str, pointer: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), pointer.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// Header names in the client's spelling, listed as a difference at this pointer (the
/// headers themselves are compared under their lowercase names).
pub const HEADER_NAMES_POINTER: &str = "/event/headers";

/// The project's one list of accepted differences between the stand-in and `sam local
/// start-api` (SAM CLI 1.170). Where they differ, the stand-in follows the deployed HTTP API.
pub const ACCEPTED: &[Accepted] = &[
    Accepted {
        requests: &[],
        pointer: HEADER_NAMES_POINTER,
        stand_in: Side::Is("[]"),
        sam: Side::Present,
        also: None,
        reason: "header names: API Gateway lowercases them in payload 2.0 (documented); sam local \
                 passes Werkzeug's Title-Case spelling",
    },
    Accepted {
        requests: &[],
        pointer: "/event/headers/cookie",
        stand_in: Side::Absent,
        sam: Side::Present,
        also: None,
        reason: "payload 2.0 moves Cookie headers into `cookies`; sam local fills `cookies` \
                 and also keeps the header",
    },
    Accepted {
        requests: &[],
        pointer: "/event/headers/x-forwarded-for",
        stand_in: Side::Present,
        sam: Side::Absent,
        also: None,
        reason: "API Gateway adds the caller's address; sam local does not",
    },
    Accepted {
        requests: &[],
        pointer: "/event/cookies",
        stand_in: Side::Absent,
        sam: Side::Is("[]"),
        also: None,
        reason: "no cookies: API Gateway omits the field; sam local sends []",
    },
    Accepted {
        requests: &[],
        pointer: "/event/body",
        stand_in: Side::Absent,
        sam: Side::Is(r#""""#),
        also: None,
        reason: "no body: API Gateway omits the field; sam local sends \"\"",
    },
    Accepted {
        requests: &[],
        pointer: "/event/pathParameters",
        stand_in: Side::Absent,
        sam: Side::Is("{}"),
        also: None,
        reason: "a route without parameters: API Gateway omits the field; sam local sends {}",
    },
    Accepted {
        requests: &[],
        pointer: "/event/stageVariables",
        stand_in: Side::Absent,
        sam: Side::Is("null"),
        also: None,
        reason: "no stage variables (the template sets none): the stand-in omits the field; \
                 sam local sends null; lambda_http reads both alike",
    },
    Accepted {
        requests: &[
            "push-json",
            "text-without-content-type",
            "status-with-query",
            "cookies-and-repeated-headers",
            "encoded-path",
        ],
        pointer: "/event/requestContext/authorizer",
        stand_in: Side::Present,
        sam: Side::Absent,
        also: None,
        reason: "IAM routes: API Gateway passes the signer's identity (the stand-in: one fixed \
                 local IAM user); sam local does not emulate AWS_IAM and passes none",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/accountId",
        stand_in: Side::Is(r#""000000000000""#),
        sam: Side::Is(r#""123456789012""#),
        also: None,
        reason: "placeholder account ids",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/apiId",
        stand_in: Side::Is(r#""local""#),
        sam: Side::Is(r#""1234567890""#),
        also: None,
        reason: "placeholder API ids",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/domainName",
        stand_in: Side::Is(r#""<listener>""#),
        sam: Side::Is(r#""localhost""#),
        also: None,
        reason: "API Gateway gives the Host the client used; so does the stand-in, port \
                 included, so the callback URL a function derives from it reaches the stand-in; \
                 sam local always says localhost",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/domainPrefix",
        stand_in: Side::Is(r#""127""#),
        sam: Side::Is(r#""localhost""#),
        also: None,
        reason: "the first label of domainName, as API Gateway derives it (127 of 127.0.0.1)",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/http/userAgent",
        stand_in: Side::Present,
        sam: Side::Is(r#""Custom User Agent String""#),
        also: None,
        reason: "API Gateway copies the User-Agent header; sam local sends a fixed placeholder",
    },
    Accepted {
        requests: &[],
        pointer: "/event/requestContext/timeEpoch",
        stand_in: Side::Is(r#""<epoch milliseconds>""#),
        sam: Side::Is(r#""<epoch seconds>""#),
        also: None,
        reason: "API Gateway gives milliseconds; sam local gives seconds (and stamps every \
                 event with the time it started)",
    },
    Accepted {
        requests: &[],
        pointer: "/response/headers/apigw-requestid",
        stand_in: Side::Present,
        sam: Side::Absent,
        also: None,
        reason: "API Gateway names the request in every answer; sam local does not",
    },
    Accepted {
        requests: &[],
        pointer: "/response/status",
        stand_in: Side::Is("404"),
        sam: Side::Is("403"),
        also: None,
        reason: "no route: an HTTP API answers 404 Not Found; sam local answers as a REST API \
                 does, 403 Missing Authentication Token",
    },
    Accepted {
        requests: &[],
        pointer: "/body/message",
        stand_in: Side::Is(r#""Not Found""#),
        sam: Side::Is(r#""Missing Authentication Token""#),
        also: None,
        reason: "no route: the HTTP API's and the REST API's message",
    },
    Accepted {
        requests: &["binary-body"],
        pointer: "/response/status",
        stand_in: Side::Is("200"),
        sam: Side::Is("502"),
        also: None,
        reason: "a body that is not UTF-8: API Gateway base64-encodes it; sam local fails to \
                 decode it (UnicodeDecodeError) and never calls the function",
    },
    Accepted {
        requests: &["binary-body"],
        pointer: "/event",
        stand_in: Side::Present,
        sam: Side::Absent,
        also: None,
        reason: "a body that is not UTF-8: only the stand-in calls the function",
    },
    Accepted {
        requests: &["binary-body"],
        pointer: "/body",
        stand_in: Side::Absent,
        sam: Side::Is(r#"{"message":"Internal server error"}"#),
        also: None,
        reason: "a body that is not UTF-8: sam local's error answer",
    },
    Accepted {
        requests: &["text-without-content-type"],
        pointer: "/event/isBase64Encoded",
        stand_in: Side::Is("true"),
        sam: Side::Is("false"),
        also: None,
        reason: "no textual Content-Type: API Gateway base64-encodes the body (observed on the \
                 service, not documented); sam local passes it as text",
    },
    Accepted {
        requests: &["text-without-content-type"],
        pointer: "/event/body",
        stand_in: Side::Present,
        sam: Side::Present,
        also: Some(base64_of),
        reason: "the same body, base64-encoded by the stand-in only",
    },
];

/// The stand-in's value is SAM's text, base64-encoded.
fn base64_of(stand_in: &Value, sam: &Value) -> bool {
    use base64::Engine as _;
    match (stand_in.as_str(), sam.as_str()) {
        (Some(encoded), Some(text)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .is_ok_and(|decoded| decoded == text.as_bytes()),
        _ => false,
    }
}

/// A difference with the table entry that accepts it, if any.
pub struct Judged {
    pub difference: Difference,
    pub accepted_by: Option<usize>,
}

/// Matches each difference of `request` with the first [`ACCEPTED`] entry that explains it,
/// counting in `used` how often each entry was needed.
pub fn judge(request: &str, differences: Vec<Difference>, used: &mut [usize]) -> Vec<Judged> {
    differences
        .into_iter()
        .map(|difference| {
            let accepted_by = ACCEPTED
                .iter()
                .position(|entry| entry.matches(request, &difference));
            if let Some(index) = accepted_by {
                used[index] += 1;
            }
            Judged {
                difference,
                accepted_by,
            }
        })
        .collect()
}

/// The project's template with every function's code replaced by the directory `code_dir`
/// (holding one `bootstrap`) and its build metadata removed, so `sam local` runs that bootstrap
/// behind exactly the template's routes, authorisation and settings.
pub fn echo_template(template: &str, code_dir: &Path) -> Result<String, serde_yaml::Error> {
    use serde_yaml::Value as Yaml;
    let mut template: Yaml = serde_yaml::from_str(template)?;
    let functions = template
        .get_mut("Resources")
        .and_then(Yaml::as_mapping_mut)
        .into_iter()
        .flat_map(|resources| resources.values_mut())
        .filter(|resource| {
            resource.get("Type").and_then(Yaml::as_str) == Some("AWS::Serverless::Function")
        });
    for function in functions {
        let Some(function) = function.as_mapping_mut() else {
            continue;
        };
        function.remove("Metadata");
        if let Some(properties) = function
            .get_mut("Properties")
            .and_then(Yaml::as_mapping_mut)
        {
            properties.insert(
                "CodeUri".into(),
                Yaml::String(code_dir.display().to_string()),
            );
        }
    }
    serde_yaml::to_string(&template)
}

#[cfg(test)]
mod tests;
