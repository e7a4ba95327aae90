use super::*;

const NOW_MS: i64 = 1_796_114_523_123;

fn sam_like_event() -> Value {
    json!({
        "headers": {"Host": "127.0.0.1:3999", "X-Forwarded-Port": "3999", "accept": "*/*"},
        "requestContext": {
            "requestId": "4d1adc5b-661c-47af-a2d3-44a612163070",
            "time": "01/Dec/2026:08:42:03 +0000",
            "timeEpoch": NOW_MS / 1000,
            "domainName": "localhost",
        },
    })
}

#[test]
fn echoed_event_and_plain_answer_become_documents() {
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("date".to_string(), "today".to_string()),
    ];
    let event = sam_like_event().to_string();
    let echoed = exchange_document(200, &headers, event.as_bytes());
    assert_eq!(echoed["event"], sam_like_event());
    assert_eq!(
        echoed["response"]["headers"],
        json!({"content-type": "application/json"})
    );
    let error = exchange_document(404, &headers, b"{\"message\": \"Not Found\"}\n");
    assert_eq!(error["body"], json!({"message": "Not Found"}));
    assert!(error.get("event").is_none());
    let text = exchange_document(502, &headers, b"Bad Gateway");
    assert_eq!(text["body"], "Bad Gateway");
}

#[test]
fn normalising_hides_ids_times_and_the_listener_but_keeps_units_and_name_case() {
    let mut document = json!({ "event": sam_like_event(), "response": {"headers": {}} });
    let renamed = normalise(&mut document, "127.0.0.1:3999", NOW_MS);
    assert_eq!(renamed, ["Host", "X-Forwarded-Port"]);
    let event = &document["event"];
    assert_eq!(event["headers"]["host"], "<listener>");
    assert_eq!(event["headers"]["x-forwarded-port"], "<listener port>");
    assert_eq!(event["requestContext"]["requestId"], "<request id>");
    assert_eq!(
        event["requestContext"]["time"],
        "<dd/Mon/yyyy:HH:MM:SS +zone>"
    );
    assert_eq!(event["requestContext"]["timeEpoch"], "<epoch seconds>");
    assert_eq!(event["requestContext"]["domainName"], "localhost");

    let mut other = json!({"event": {"requestContext": {"timeEpoch": NOW_MS, "time": "soon"}}});
    normalise(&mut other, "127.0.0.1:1", NOW_MS);
    assert_eq!(
        other["event"]["requestContext"]["timeEpoch"],
        "<epoch milliseconds>"
    );
    assert_eq!(other["event"]["requestContext"]["time"], "soon");
}

#[test]
fn diff_reports_changed_missing_and_extra_fields_by_pointer() {
    let a = json!({"x": {"a/b": 1, "same": [1, 2], "only": true}, "y": "s"});
    let b = json!({"x": {"a/b": 2, "same": [1, 2]}, "y": "s", "z": null});
    let (fields, differences) = diff(&a, &b);
    assert_eq!(fields, 5);
    let pointers: Vec<&str> = differences.iter().map(|d| d.pointer.as_str()).collect();
    assert_eq!(pointers, ["/x/a~1b", "/x/only", "/z"]);
    assert_eq!(differences[1].sam, None);
    assert_eq!(differences[2].stand_in, None);
    assert_eq!(differences[2].sam, Some(Value::Null));
}

#[test]
fn an_entry_accepts_only_its_request_pointer_and_values() {
    let mut used = vec![0; ACCEPTED.len()];
    let missing_body = Difference {
        pointer: "/event/body".into(),
        stand_in: None,
        sam: Some(json!("")),
    };
    let judged = judge("any", vec![missing_body.clone()], &mut used);
    assert!(judged[0].accepted_by.is_some());

    // The same field with a real body on one side only is not the accepted difference.
    let lost_body = Difference {
        sam: Some(json!("{}")),
        ..missing_body
    };
    let judged = judge("any", vec![lost_body.clone()], &mut used);
    assert!(judged[0].accepted_by.is_none());
    // Two different bodies are accepted for the one probe that expects them only.
    let both = Difference {
        stand_in: Some(json!("e30=")),
        ..lost_body
    };
    assert!(judge("any", vec![both.clone()], &mut used)[0]
        .accepted_by
        .is_none());
    assert!(judge("text-without-content-type", vec![both], &mut used)[0]
        .accepted_by
        .is_some());
    assert!(pointer_matches("/event/*/cookie", "/event/headers/cookie"));
    assert!(!pointer_matches("/event/*", "/event/headers/cookie"));
}

#[test]
fn echo_template_swaps_code_and_drops_build_metadata_but_keeps_routes_and_tags() {
    let template = r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: AWS_IAM
  Push:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
    Properties:
      CodeUri: ./
      Environment:
        Variables:
          TABLE: !Ref Table
      Events:
        Start:
          Type: HttpApi
          Properties:
            Path: /payments
            Method: POST
"#;
    let out = echo_template(template, Path::new("/tmp/echo")).unwrap();
    let parsed: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    let push = &parsed["Resources"]["Push"];
    assert!(push.get("Metadata").is_none(), "{out}");
    assert_eq!(push["Properties"]["CodeUri"].as_str(), Some("/tmp/echo"));
    assert_eq!(
        push["Properties"]["Events"]["Start"]["Properties"]["Path"].as_str(),
        Some("/payments")
    );
    assert!(out.contains("!Ref Table"), "{out}");
    assert_eq!(
        parsed["Resources"]["Api"]["Properties"]["Auth"]["DefaultAuthorizer"].as_str(),
        Some("AWS_IAM")
    );
}
